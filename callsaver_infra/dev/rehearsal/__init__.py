"""The local deploy rehearsal (`python -m callsaver_infra.dev.rehearsal`, `make rehearse`)."""
