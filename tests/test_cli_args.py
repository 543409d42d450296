"""Argument validation of `callsaver-infra`: a wrong path is a usage error with a clear message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from callsaver_infra.ops.cli import main
from tests.helpers import CONFIG_DIR


def test_outputs_file_that_is_a_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config-dir", str(CONFIG_DIR), "push-egress", "--env", "staging", "--outputs-file", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --outputs-file: {str(tmp_path)!r} is a directory; give the JSON file" in err
    assert "Traceback" not in err
