"""Deployable units: thin stacks that compose the constructs of one environment."""
