"""The body of the one pull-request comment per environment that shows its `cdk diff` (updated in place).

The workflow posts it with marocchino/sticky-pull-request-comment, keyed by names.pr_comment_header(env), which this
module writes to the step's outputs (--github-output), so the key has one spelling.

    python -m callsaver_infra.ops.pr_comment --env staging --diff diff.txt --gate gate.md --out comment.md \
        --commit "$SHA" --run-url "$RUN_URL" [--github-output "$GITHUB_OUTPUT"]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from callsaver_infra.app.names import pr_comment_header

# GitHub rejects comment bodies over 65,536 characters; leave room for the text around the diff.
MAX_DIFF_CHARS = 60_000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def build_comment(
    env: str, diff: str | None, gate: str | None, *, commit: str, run_url: str, image: str | None = None
) -> str:
    """Markdown for env's comment: the destructive-change gate's verdict, the agent image (if given), then the whole
    diff, folded."""
    diff = _ANSI.sub("", diff or "").strip()
    truncated = len(diff) > MAX_DIFF_CHARS
    if truncated:
        diff = diff[:MAX_DIFF_CHARS].rstrip()
    # A fence longer than any backtick run inside, so the diff can never close it early.
    longest = max((len(run) for run in re.findall(r"`+", diff)), default=0)
    fence = "`" * max(3, longest + 1)
    changed = re.search(r"Number of stacks with differences: (\d+)", diff)
    summary = f"{changed.group(1)} stack(s) with differences" if changed else "output"
    lines = [
        f"### `cdk diff` — {env}",
        "",
        (gate or "❔ The destructive-change gate did not run (see the workflow run).").strip(),
        "",
        *([f"Agent image this would deploy: `{image}`", ""] if image else []),
        f"<details><summary>Full diff against the deployed stacks ({summary})</summary>",
        "",
        f"{fence}text",
        diff or "(no output: cdk diff did not run; see the workflow run)",
        fence,
        "",
        "</details>",
        "",
    ]
    if truncated:
        lines.append(f"The diff is cut at {MAX_DIFF_CHARS:,} characters; the workflow run's log has all of it.")
        lines.append("")
    lines.append(
        f"Commit `{commit[:12]}` · [workflow run]({run_url}) · template diff against what CloudFormation holds, "
        "read with the CDK lookup role."
    )
    return "\n".join(lines) + "\n"


def _read(path: Path | None) -> str | None:
    if path is None or not path.exists():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _agent_image(env: str, assembly: Path) -> str:
    """repository:tag of the agent image in env's synthesized agent template (config's tag, or a hotfix's)."""
    from callsaver_infra.app.config import load_environments
    from callsaver_infra.ops.image_check import ImageCheckError, tag_in_assembly

    config = load_environments(Path("config"))[env]
    try:
        return f"{config.agent.image_repository}:{tag_in_assembly(config, assembly)}"
    except ImageCheckError as e:
        return f"(unknown: {e})"


def main(argv: Sequence[str] | None = None) -> int:
    """Write env's comment body from the saved diff output and gate verdict (missing files are reported in it)."""
    parser = argparse.ArgumentParser(prog="python -m callsaver_infra.ops.pr_comment", description=__doc__)
    parser.add_argument("--env", required=True)
    parser.add_argument("--diff", type=Path, help="the saved output of cdk diff")
    parser.add_argument("--gate", type=Path, help="the Markdown verdict of callsaver_infra.ops.stateful_changes")
    parser.add_argument("--commit", required=True)
    parser.add_argument("--run-url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--assembly", type=Path, help="the synthesized cloud assembly: name the agent image it holds")
    parser.add_argument(
        "--github-output", type=Path, help="append header=<the comment's key> to this file (the step's $GITHUB_OUTPUT)"
    )
    args = parser.parse_args(argv)
    image = _agent_image(args.env, args.assembly) if args.assembly else None
    body = build_comment(
        args.env, _read(args.diff), _read(args.gate), commit=args.commit, run_url=args.run_url, image=image
    )
    args.out.write_text(body, encoding="utf-8")
    if args.github_output:
        with args.github_output.open("a", encoding="utf-8") as outputs:
            outputs.write(f"header={pr_comment_header(args.env)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
