"""The GitHub Actions workflows: actionlint and zizmor (offline) pass on them and bite on a bad one; actions are
pinned to verified commits; permissions are least; the workflows agree with config/ci/github.toml and the CI stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from callsaver_infra.app.ci_config import CI_CONFIG_FILE, CiConfig, load_ci_config
from callsaver_infra.app.config import EnvironmentConfig
from callsaver_infra.app.names import CiOutputs, pr_comment_header, pr_comment_marker
from callsaver_infra.ops.pr_comment import main as pr_comment_main
from callsaver_infra.ops.stateful_changes import ALLOW_INPUT, ALLOW_LABEL
from tests.helpers import CONFIG_DIR, ROOT

GITHUB = ROOT / ".github"
WORKFLOW_FILES = sorted((GITHUB / "workflows").glob("*.yml"))
SETUP_ACTION = GITHUB / "actions" / "setup" / "action.yml"
VENV_BIN = Path(sys.executable).parent

# Every third-party action, pinned to the commit of one release. Each SHA -> version pair was checked in at least two
# unrelated public repositories that pin the same commit with the same version comment; the sticky comment's from the
# tag in a snapshot of its own repository (v3.0.5, 2026-07-05).
PINNED = {
    "actions/checkout": ("de0fac2e4500dabe0009e67214ff5f5447ce83dd", "v6.0.2"),
    "actions/setup-python": ("a309ff8b426b58ec0e2a45f0f869d46889d02405", "v6.2.0"),
    "actions/setup-node": ("6044e13b5dc448c55e2357c09f80417699197238", "v6.2.0"),
    "actions/upload-artifact": ("b7c566a772e6b6bfb58ed0dc250532a479d7789f", "v6.0.0"),
    "actions/download-artifact": ("37930b1c2abaa49bbe596cd826c3c89aef350131", "v7.0.0"),
    "marocchino/sticky-pull-request-comment": ("5770ad5eb8f42dd2c4f34da00c94c5381e49af88", "v3.0.5"),
    "aws-actions/configure-aws-credentials": ("61815dcd50bd041e203e49132bacad1fd04d2708", "v5.1.1"),
}

# A workflow with one mistake per check the linters must catch.
BAD_WORKFLOW = """\
name: bad
on: pull_request_target
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-dept: 1
      - run: echo "${{ github.event.pull_request.title }}"
      - run: |
          files=$(ls)
          cat $files
      - uses: aws-actions/configure-aws-credentials@v4
        with:
          aws-access-key-id: ${{ secrets.AWS_ACCESS_KEY_ID }}
          aws-secret-access-key: ${{ secrets.AWS_SECRET_ACCESS_KEY }}
          aws-region: us-west-1
"""


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (it is a pinned dev dependency)")
    return str(path)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The venv's bin first, so actionlint finds the pinned shellcheck.
    env = {**os.environ, "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", os.defpath)])}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _load(path: Path) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    if True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {p.name: _load(p) for p in WORKFLOW_FILES}


@pytest.fixture(scope="module")
def ci(environments: dict[str, EnvironmentConfig]) -> CiConfig:
    return load_ci_config(CONFIG_DIR / CI_CONFIG_FILE, environments)


def _jobs(workflows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{name}:{job}": spec for name, wf in workflows.items() for job, spec in wf["jobs"].items()}


def _steps(workflows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [s for job in _jobs(workflows).values() for s in job.get("steps", [])]
    return steps + list(_load(SETUP_ACTION)["runs"]["steps"])


def test_the_workflows_exist() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["deploy.yml", "pull-request.yml"]


def test_actionlint_passes() -> None:
    # Project mode (no file arguments): it also checks the calls of the local action against its inputs.
    result = _run([_tool("actionlint"), "-verbose", "-format", "{{json .}}"], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []
    assert "Linting 2 files" in result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr  # run: scripts are shellchecked too


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(BAD_WORKFLOW)
    result = _run([_tool("actionlint"), "-format", "{{json .}}", str(bad)], tmp_path)
    assert result.returncode == 1, result.stderr
    messages = [(e["kind"], e["message"]) for e in json.loads(result.stdout)]
    kinds = {kind for kind, _ in messages}
    assert {"expression", "action", "shellcheck"} <= kinds, messages
    assert any("github.event.pull_request.title" in m and "untrusted" in m for _, m in messages)
    assert any('input "fetch-dept" is not defined' in m for _, m in messages)
    assert any("SC2086" in m for _, m in messages)


def _zizmor(*inputs: str, cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    result = _run([_tool("zizmor"), "--offline", "--persona", "pedantic", "--format", "json", *inputs], cwd)
    assert result.stdout.strip(), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return result.returncode, findings


def test_zizmor_offline_pedantic_finds_nothing() -> None:
    code, findings = _zizmor(".github", cwd=ROOT)
    assert [(f["ident"], f["locations"][0]["symbolic"]["key"]) for f in findings] == []
    assert code == 0


def test_zizmor_config_silences_only_the_two_reviewed_audits() -> None:
    config = yaml.safe_load((GITHUB / "zizmor.yml").read_text())
    assert config["rules"] == {
        "self-repository": {"disable": True},
        "concurrency-limits": {"ignore": ["deploy.yml"]},
    }


def test_zizmor_catches_a_bad_workflow(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(BAD_WORKFLOW)
    code, findings = _zizmor("bad.yml", cwd=tmp_path)
    idents = {f["ident"] for f in findings}
    assert {
        "unpinned-uses",
        "template-injection",
        "excessive-permissions",
        "artipacked",
        "dangerous-triggers",
    } <= idents, idents
    assert code >= 10  # zizmor's exit codes 10-14: findings, by highest severity


def test_actions_are_pinned_to_verified_release_commits() -> None:
    seen: dict[str, set[str]] = {}
    for path in [*WORKFLOW_FILES, SETUP_ACTION]:
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", line)
            if not match:
                continue
            ref, comment = match.groups()
            if ref.startswith("./"):
                assert ref == "./.github/actions/setup", line
                continue
            action, _, sha = ref.partition("@")
            assert action in PINNED, f"{path.name}: {action} is not a reviewed action"
            assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{path.name}: {line.strip()} is not pinned to a commit"
            assert (sha, comment.strip()) == (PINNED[action][0], f"# {PINNED[action][1]}"), line
            seen.setdefault(action, set()).add(sha)
    assert set(seen) == set(PINNED)


def test_permissions_are_least(workflows: dict[str, dict[str, Any]]) -> None:
    for wf in workflows.values():
        assert wf["permissions"] == {}  # nothing by default; each job asks for what it needs
    granted = {name: job["permissions"] for name, job in _jobs(workflows).items()}
    assert granted == {
        "deploy.yml:prepare": {"contents": "read", "pull-requests": "read"},
        "deploy.yml:staging": {"contents": "read", "id-token": "write"},
        "deploy.yml:production-plan": {"contents": "read", "id-token": "write"},
        "deploy.yml:production": {"contents": "read", "id-token": "write"},
        "pull-request.yml:lint": {"contents": "read"},
        "pull-request.yml:test": {"contents": "read"},
        "pull-request.yml:synth": {"contents": "read"},
        "pull-request.yml:cfn-lint": {"contents": "read"},
        "pull-request.yml:diff": {"contents": "read", "id-token": "write", "pull-requests": "write"},
    }


def test_aws_credentials_come_only_from_github_oidc(workflows: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in [*WORKFLOW_FILES, SETUP_ACTION])
    assert "secrets." not in text and "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    aws_steps = [s for s in _steps(workflows) if s.get("uses", "").startswith("aws-actions/configure-aws-credentials")]
    assert len(aws_steps) == 4  # diff, staging, production plan, production
    for step in aws_steps:
        assert set(step["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
        assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]+_ROLE_ARN(_[A-Z]+)? \}\}", step["with"]["role-to-assume"])


def test_no_expression_is_interpolated_into_a_script(workflows: dict[str, dict[str, Any]]) -> None:
    """Untrusted values (titles, branch names, inputs) reach scripts only through env, never as ${{ }} in run:."""
    for step in _steps(workflows):
        assert "${{" not in step.get("run", ""), step
        assert "${{" not in step.get("with", {}).get("script", ""), step


def test_checkouts_do_not_persist_credentials(workflows: dict[str, dict[str, Any]]) -> None:
    checkouts = [s for s in _steps(workflows) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all(s["with"] == {"persist-credentials": False} for s in checkouts)


def test_pull_request_jobs_run_the_make_targets(workflows: dict[str, dict[str, Any]]) -> None:
    jobs = workflows["pull-request.yml"]["jobs"]
    runs = {name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert "make lint" in runs["lint"]
    assert "make test" in runs["test"]
    assert "make synth" in runs["synth"]
    assert "cfn-lint 'cdk.out/**/*.template.json'" in runs["cfn-lint"]
    assert 'make diff ENV="$ENVIRONMENT" CDK_ARGS="--method=template' in runs["diff"]
    assert "callsaver_infra.ops.stateful_changes --assembly cdk.out --role base" in runs["diff"]
    assert workflows["pull-request.yml"]["on"]["pull_request"]["types"] == [
        "opened",
        "synchronize",
        "reopened",
        "labeled",
        "unlabeled",
    ]


def test_diff_runs_per_deployed_environment_and_skips_without_a_role(
    workflows: dict[str, dict[str, Any]], ci: CiConfig
) -> None:
    diff = workflows["pull-request.yml"]["jobs"]["diff"]
    assert diff["strategy"]["matrix"]["environment"] == list(ci.deploy_environments)
    assert diff["strategy"]["fail-fast"] is False
    check = diff["steps"][0]
    assert check["env"]["DIFF_ROLE_ARN"] == f"${{{{ vars.{CiOutputs.DIFF_ROLE_VARIABLE} }}}}"
    assert "::notice title=cdk diff skipped::" in check["run"]
    later = diff["steps"][1:]
    assert all("steps.aws.outputs.connected == 'true'" in s["if"] for s in later)
    # The verdict and the comment are posted even when the gate (or the diff) failed.
    assert all(s["if"].startswith("${{ !cancelled()") for s in later[4:])


def test_one_comment_per_environment_updated_in_place(workflows: dict[str, dict[str, Any]]) -> None:
    """A maintained action posts the comment; its key comes from names.py through the compose step's output."""
    steps = workflows["pull-request.yml"]["jobs"]["diff"]["steps"]
    compose, post = steps[-2], steps[-1]
    assert post["uses"].startswith("marocchino/sticky-pull-request-comment@")
    assert post["with"] == {"header": "${{ steps.comment.outputs.header }}", "path": "comment.md"}
    assert compose["id"] == "comment"
    assert "--out comment.md" in compose["run"] and '--github-output "$GITHUB_OUTPUT"' in compose["run"]
    # No second spelling of the key or marker anywhere in the workflows, and no hand-written comment code.
    text = "\n".join(p.read_text() for p in WORKFLOW_FILES)
    assert pr_comment_header("") not in text and "Sticky Pull Request Comment" not in text
    assert "github-script" not in text and "createComment" not in text


def test_the_compose_step_writes_the_comment_key(tmp_path: Path) -> None:
    outputs = tmp_path / "github_output"
    outputs.write_text("earlier=1\n")
    out = tmp_path / "comment.md"
    args = ["--env", "production", "--commit", "c", "--run-url", "u", "--out", str(out)]
    assert pr_comment_main([*args, "--github-output", str(outputs)]) == 0
    assert outputs.read_text() == "earlier=1\nheader=cdk-diff:production\n"
    # The action ends the body with its marker; the body carries none of its own.
    assert pr_comment_marker("production") == "<!-- Sticky Pull Request Commentcdk-diff:production -->"
    assert "<!--" not in out.read_text()


def test_the_escape_hatch_names_match_the_gate(workflows: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in WORKFLOW_FILES)
    assert text.count(f"'{ALLOW_LABEL}'") == 1  # the pull request's label
    assert 'index("allow-destructive-changes")' in text  # the merged pull request's label, on push
    assert ALLOW_INPUT in workflows["deploy.yml"]["on"]["workflow_dispatch"]["inputs"]


def test_deploys_match_the_ci_config_and_trust(workflows: dict[str, dict[str, Any]], ci: CiConfig) -> None:
    deploy = workflows["deploy.yml"]
    assert deploy["on"]["push"] == {"branches": [ci.main_branch]}
    assert f'"refs/heads/{ci.main_branch}"' in deploy["jobs"]["prepare"]["steps"][0]["run"]
    for wf in workflows.values():
        assert wf["env"]["AWS_REGION"] == ci.region
    jobs = deploy["jobs"]
    approval = [env for env in ci.deploy_environments if ci.needs_approval(env)]
    direct = [env for env in ci.deploy_environments if not ci.needs_approval(env)]
    assert (direct, approval) == (["staging"], ["production"])
    # The staging role trusts the main branch's subject, which a job in a GitHub environment never has.
    assert "environment" not in jobs["staging"] and jobs["staging"]["env"]["ENVIRONMENT"] == "staging"
    assert jobs["production"]["environment"] == ci.production_approval_environment
    assert jobs["production"]["needs"] == ["prepare", "production-plan"]
    assert jobs["production-plan"]["needs"] == ["prepare", "staging"]
    roles = {
        name: step["with"]["role-to-assume"]
        for name, job in jobs.items()
        for step in job["steps"]
        if "configure-aws-credentials" in step.get("uses", "")
    }
    assert roles == {
        "staging": f"${{{{ vars.{CiOutputs.deploy_role_variable('staging')} }}}}",
        "production-plan": f"${{{{ vars.{CiOutputs.DIFF_ROLE_VARIABLE} }}}}",
        "production": f"${{{{ vars.{CiOutputs.deploy_role_variable('production')} }}}}",
    }


def test_two_deploys_of_one_environment_never_overlap(workflows: dict[str, dict[str, Any]]) -> None:
    jobs = workflows["deploy.yml"]["jobs"]
    groups = {name: job.get("concurrency") for name, job in jobs.items()}
    assert groups == {
        "prepare": None,
        "staging": {"group": "deploy-staging", "cancel-in-progress": False},
        "production-plan": {"group": "deploy-production", "cancel-in-progress": False},
        "production": {"group": "deploy-production", "cancel-in-progress": False},
    }


def test_deploys_run_make_deploy_on_the_checked_assembly(workflows: dict[str, dict[str, Any]]) -> None:
    jobs = workflows["deploy.yml"]["jobs"]
    for name in ("staging", "production"):
        runs = [s.get("run", "") for s in jobs[name]["steps"]]
        deploys = [r for r in runs if "make deploy" in r]
        assert deploys == ['make deploy ENV="$ENVIRONMENT" CDK_ARGS="--app cdk.out --require-approval never"']
        gate = next(i for i, r in enumerate(runs) if "callsaver_infra.ops.stateful_changes" in r)
        assert gate < runs.index(deploys[0]) and "--role deploy" in runs[gate]
    for name in ("staging", "production-plan"):
        scripts = " ".join(s.get("run", "") for s in jobs[name]["steps"])
        # Config's tag, unless the hotfix input is set.
        assert 'make synth ENV="$ENVIRONMENT" CDK_ARGS="${IMAGE_TAG:+-c agentImageTag=$IMAGE_TAG}"' in scripts
        assert jobs[name]["env"]["IMAGE_TAG"] == "${{ needs.prepare.outputs.image_tag }}"
    tag = jobs["prepare"]["steps"][1]
    assert tag["env"] == {"INPUT_TAG": "${{ inputs.image_tag }}"}
    assert 'echo "image_tag=$INPUT_TAG" >> "$GITHUB_OUTPUT"' in tag["run"]
    # Production deploys the artifact its plan showed, checked by digest.
    production = jobs["production"]
    assert production["env"]["PLANNED_DIGEST"] == "${{ needs.production-plan.outputs.digest }}"
    assert any('"$digest" != "$PLANNED_DIGEST"' in s.get("run", "") for s in production["steps"])


def test_caches_for_pip_and_npm_but_not_in_deploys(workflows: dict[str, dict[str, Any]]) -> None:
    setup = {s["name"]: s for s in _load(SETUP_ACTION)["runs"]["steps"]}
    assert setup["Set up Python"]["with"]["cache"] == "${{ inputs.cache == 'true' && 'pip' || '' }}"
    assert setup["Set up Node"]["with"]["cache"] == "${{ inputs.cache == 'true' && 'npm' || '' }}"
    assert setup["Install the pinned dependencies (make setup)"]["run"] == "make setup"
    for name, job in _jobs(workflows).items():
        for step in job["steps"]:
            if step.get("uses") == "./.github/actions/setup":
                expected = {"cache": "false"} if name.startswith("deploy.yml") else None
                assert step.get("with") == expected, name


def test_makefile_passes_cdk_args_to_synth_diff_and_deploy() -> None:
    for target, expected in (
        ("synth", "cdk synth --quiet -c env=staging --x"),
        ("diff", "cdk diff -c env=staging 'Callsaver-*-staging' --x"),
        ("deploy", "cdk deploy --all -c env=staging --outputs-file cdk.outputs.staging.json --x"),
    ):
        result = _run(["make", "-n", target, "ENV=staging", "CDK_ARGS=--x"], ROOT)
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout, result.stdout


# A pipe (`a | b`, `a |& b`), not `||`. Quoted pipes count too: erring towards a finding is the safe side.
_PIPE = re.compile(r"(?<!\|)\|(?!\|)")
_SET_PIPEFAIL = re.compile(r"^\s*set\b[^\n#]*-\w*o\s*pipefail", re.MULTILINE)
# GitHub runs `shell: bash` as `bash --noprofile --norc -eo pipefail {0}`, but no `shell:` at all as `bash -e {0}`.
_POSIX_SHELLS = (None, "bash", "sh")


def _shell_has_pipefail(shell: str | None) -> bool:
    return shell == "bash" or (shell is not None and shell.split()[0] == "bash" and "pipefail" in shell)


def pipe_hazards(name: str, workflow: dict[str, Any]) -> list[str]:
    """Every `run:` step of a workflow whose pipe could hide a failure: a POSIX shell without pipefail."""
    default = workflow.get("defaults", {}).get("run", {}).get("shell")
    hazards = []
    for job_id, job in workflow.get("jobs", {}).items():
        job_shell = job.get("defaults", {}).get("run", {}).get("shell", default)
        for index, step in enumerate(job.get("steps", [])):
            script = step.get("run")
            shell = step.get("shell", job_shell)
            if script is None or _shell_has_pipefail(shell) or _SET_PIPEFAIL.search(script):
                continue
            if (shell is None or shell.split()[0] in _POSIX_SHELLS) and _PIPE.search(script):
                hazards.append(f"{name}: job {job_id}, step {step.get('name', index)!r} pipes without pipefail")
    return hazards


def test_every_workflow_runs_its_steps_in_bash_with_pipefail(workflows: dict[str, dict[str, Any]]) -> None:
    for name, workflow in workflows.items():
        assert workflow.get("defaults", {}).get("run", {}).get("shell") == "bash", name
    assert [h for name, wf in workflows.items() for h in pipe_hazards(name, wf)] == []
    # The composite setup action has no defaults: each of its steps names its shell.
    assert [s.get("shell") for s in _load(SETUP_ACTION)["runs"]["steps"] if "run" in s] == ["bash"]


PIPED_STEP_WORKFLOW = """\
name: piped
on: pull_request
permissions: {}
jobs:
  diff:
    runs-on: ubuntu-24.04
    steps:
      - name: diff
        run: make diff ENV=staging 2>&1 | tee diff.txt
      - name: no pipe
        run: make test || echo failed
"""


def test_pipe_checker_catches_a_piped_step_without_pipefail() -> None:
    bad = yaml.safe_load(PIPED_STEP_WORKFLOW)
    assert pipe_hazards("bad.yml", bad) == ["bad.yml: job diff, step 'diff' pipes without pipefail"]
    # The workflow-level default fixes it; a job- or step-level sh (dash has no pipefail) or `bash -e {0}` breaks it.
    fixed = {**bad, "defaults": {"run": {"shell": "bash"}}}
    assert pipe_hazards("fixed.yml", fixed) == []
    for override in ("sh", "bash -e {0}"):
        broken = yaml.safe_load(PIPED_STEP_WORKFLOW)
        broken["defaults"] = {"run": {"shell": "bash"}}
        broken["jobs"]["diff"]["steps"][0]["shell"] = override
        assert len(pipe_hazards("broken.yml", broken)) == 1, override
    # A script that sets pipefail itself is fine under any bash.
    own = yaml.safe_load(PIPED_STEP_WORKFLOW)
    own["jobs"]["diff"]["steps"][0]["run"] = "set -euo pipefail\nmake diff 2>&1 | tee diff.txt"
    assert pipe_hazards("own.yml", own) == []


# Expressions naming a commit of this repository: never the agent image's tag (nothing here builds the image).
_COMMIT_EXPRESSION = re.compile(r"github\.sha|pull_request\.head\.sha|github\.event\.after|head_commit\.id")


def tags_from_commits(workflow: dict[str, Any]) -> list[str]:
    """Where a workflow feeds a commit SHA into the agent image tag: a tag-named variable or input bound to a
    commit expression, or a commit-bound variable used by a script that sets agentImageTag or an image tag."""
    found = []
    for job_name, job in workflow.get("jobs", {}).items():
        scopes = [("job env", job.get("env") or {}, " ".join(s.get("run", "") for s in job.get("steps", [])))]
        for step in job.get("steps", []):
            scopes.append((step.get("name", "?"), {**(step.get("env") or {}), **(step.get("with") or {})},
                           step.get("run", "")))  # fmt: skip
        outputs = job.get("outputs") or {}
        scopes.append(("job outputs", outputs, ""))
        for where, bindings, script in scopes:
            commit_vars = [k for k, v in bindings.items() if _COMMIT_EXPRESSION.search(str(v))]
            for var in commit_vars:
                tag_named = "tag" in var.lower()
                used_for_tag = re.search(rf"\$\{{?{re.escape(var)}\b", script) and re.search(
                    r"agentImageTag|image_tag|IMAGE_TAG", script
                )
                if tag_named or used_for_tag:
                    found.append(f"{job_name} / {where}: {var}")
    return found


def test_no_workflow_derives_the_image_tag_from_a_commit(workflows: dict[str, dict[str, Any]]) -> None:
    assert {name: tags_from_commits(wf) for name, wf in workflows.items()} == {name: [] for name in workflows}


@pytest.mark.parametrize(
    "bad",
    [
        # The deploy workflow before the registry: the input, or the merged commit's SHA.
        {"jobs": {"prepare": {"steps": [{"name": "Image tag", "env": {"INPUT_TAG": "${{ inputs.image_tag }}",
         "COMMIT": "${{ github.sha }}"}, "run": 'tag="${INPUT_TAG:-$COMMIT}"\necho "image_tag=$tag" >> x'}]}}},
        # The pull-request diff before the registry: the head commit as the tag.
        {"jobs": {"diff": {"steps": [{"name": "diff", "env": {"IMAGE_TAG": "${{ github.event.pull_request.head.sha }}"},
         "run": 'make diff CDK_ARGS="-c agentImageTag=$IMAGE_TAG"'}]}}},
        {"jobs": {"d": {"env": {"SHA": "${{ github.sha }}"},
         "steps": [{"run": "make synth CDK_ARGS=\"-c agentImageTag=${SHA}\""}]}}},
    ],
)  # fmt: skip
def test_the_commit_tag_check_bites(bad: dict[str, Any]) -> None:
    assert tags_from_commits(bad) != []


def test_deploys_check_the_image_before_anything_deploys(workflows: dict[str, dict[str, Any]]) -> None:
    jobs = workflows["deploy.yml"]["jobs"]
    check = '.venv/bin/callsaver-infra check-image --env "$ENVIRONMENT" --cdk-args="--app cdk.out"'
    for name in ("staging", "production"):
        runs = [s.get("run", "") for s in jobs[name]["steps"]]
        assert runs.count(check) == 1, name
        gate = next(i for i, r in enumerate(runs) if "callsaver_infra.ops.stateful_changes" in r)
        deploy = next(i for i, r in enumerate(runs) if "make deploy" in r)
        assert runs.index(check) < gate < deploy
        uses = [s.get("uses", "") for s in jobs[name]["steps"]]
        credentials = next(i for i, u in enumerate(uses) if u.startswith("aws-actions/configure-aws-credentials"))
        assert credentials < runs.index(check)
    # make deploy itself checks first too (for operators), with the same arguments cdk deploy gets.
    result = _run(["make", "-n", "deploy", "ENV=staging", "CDK_ARGS=--app cdk.out"], ROOT)
    lines = result.stdout.splitlines()
    check_line = next(i for i, ln in enumerate(lines) if "check-image" in ln)
    assert lines[check_line] == '.venv/bin/callsaver-infra check-image --env staging --cdk-args="--app cdk.out"'
    assert check_line < next(i for i, ln in enumerate(lines) if ln.startswith("cdk deploy"))


def test_diffs_and_plans_show_the_image_that_would_deploy(workflows: dict[str, dict[str, Any]]) -> None:
    diff = " ".join(s.get("run", "") for s in workflows["pull-request.yml"]["jobs"]["diff"]["steps"])
    assert "agentImageTag" not in diff  # config's tag, exactly what a merge deploys
    assert "--assembly cdk.out --out comment.md" in diff
    plan = " ".join(s.get("run", "") for s in workflows["deploy.yml"]["jobs"]["production-plan"]["steps"])
    assert "--assembly cdk.out --out plan.md" in plan
