"""`python -m callsaver_infra.rehearsal` is `callsaver-infra rehearse`."""

from callsaver_infra.cli import run

run(["rehearse"])
