"""Development tooling: the local LiveKit stand-in and the moto-based deploy rehearsal. Never imported by a deploy."""
