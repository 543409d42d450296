"""The deployable CDK app: config, names, stacks and constructs. Imports nothing from ops or dev."""
