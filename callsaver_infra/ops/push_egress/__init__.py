"""`callsaver-infra push-egress`: the post-deploy hook that pushes the recording settings to LiveKit."""
