"""The local deploy rehearsal (`callsaver-infra rehearse`, `make rehearse`)."""
