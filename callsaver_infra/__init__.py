"""callsaver-infra: the AWS CDK app behind CallSaver's voice-AI phone line."""
