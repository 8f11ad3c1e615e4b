"""The Dockerfile: its rules, read statically, and its build and run steps, run as plain commands.

There is no Docker daemon (and no base image) here, so the image is never built. Instead:

- Static: multi-stage on python:3.11-slim (CUDA 13 for FLAVOR=gpu), dependencies only from the hashed lock,
  the project as a `pip wheel --no-deps` wheel, a non-root numeric USER, EXPOSE 8001 8002 8090, a HEALTHCHECK
  through infergate-health, no ENTRYPOINT (so `docker run IMAGE infergate-monitor ...` runs the monitor),
  and every program the image or the manifests start is a console script of pyproject.toml. The
  .dockerignore allow-list is evaluated with Docker's rules (last match wins, a matching directory covers
  its contents, `!` re-includes): everything the builder COPYs is in the context, and .git, .venv, tests and
  the dev lock are not.
- Dynamic: the builder stage's COPYs are replayed from that context into a temporary /src, and its RUN
  lines run verbatim under `sh -c` with only the paths remapped (/opt/venv, /wheels to temporary
  directories): the venv is created, the wheel built with `pip wheel --no-deps`, installed with
  `pip install --no-index --find-links` (which fails if the lock misses a dependency of the project), and
  `infergate-gateway --help` runs. Then the image's CMD (with 127.0.0.1 and port 0 instead of 0.0.0.0 and
  8001) serves a registry from that install, and the HEALTHCHECK command passes against it, and fails with
  "unreachable" once SIGTERM has drained it.

The one step not run verbatim is `pip install --require-hashes -r requirements.lock`: about 250 MB of
wheels (37 s here from a cold cache, of a suite budget of 15 minutes). `make install` runs exactly that
command into .venv on every CI machine, so instead the test checks that .venv holds every pin of
requirements.lock at its version and links those distributions, and only those, into the new venv through
a .pth file; the project itself comes only from the new wheel (checked: `gateway.__file__`). Set
INFERGATE_TEST_LOCK_INSTALL=1 to run the lock install verbatim too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker

from tests.kube import K8S, KSERVE, ROOT
from tests.onnx_models import build_registry, mlp_model

DOCKERFILE = ROOT / "Dockerfile"
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
FULL_LOCK_INSTALL = os.environ.get("INFERGATE_TEST_LOCK_INSTALL") == "1"


@dataclass(frozen=True)
class Step:
    instruction: str  # upper case
    text: str  # the rest, continuation lines joined


def _steps(dockerfile: str) -> list[Step]:
    """Instructions with line continuations joined; comment lines (also inside continuations) dropped."""
    steps: list[Step] = []
    pending = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, text = full.partition(" ")
        steps.append(Step(instruction.upper(), text.strip()))
    return steps


def _stages(steps: list[Step]) -> dict[str, list[Step]]:
    """Steps by stage name (FROM ... AS name)."""
    stages: dict[str, list[Step]] = {}
    current: list[Step] = []
    for step in steps:
        if step.instruction == "FROM":
            match = re.search(r"\s+AS\s+(\S+)$", step.text, flags=re.IGNORECASE)
            assert match, f"unnamed stage: FROM {step.text}"
            current = stages.setdefault(match.group(1), [])
        current.append(step)
    return stages


def _args(steps: list[Step]) -> dict[str, str]:
    return dict(s.text.split("=", 1) for s in steps if s.instruction == "ARG" and "=" in s.text)


def _exec_form(text: str) -> list[str]:
    words = json.loads(text)
    assert isinstance(words, list), text
    return [str(w) for w in words]


STEPS = _steps(DOCKERFILE.read_text(encoding="utf-8"))
STAGES = _stages(STEPS)
RUNTIME = list(STAGES.values())[-1]
BUILDER = STAGES["builder"]


def _one(stage: list[Step], instruction: str) -> Step:
    found = [s for s in stage if s.instruction == instruction]
    assert len(found) == 1, f"expected one {instruction}: {found}"
    return found[0]


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore) pattern -> (excludes?, regex), in file order."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip())
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((not negated, re.compile(regex)))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = excludes
    return not excluded


def _copies() -> list[tuple[list[str], str]]:
    """The builder's COPY instructions from the build context: (sources, destination)."""
    copies = []
    for step in BUILDER:
        if step.instruction == "COPY" and not step.text.startswith("--from"):
            *sources, destination = step.text.split()
            copies.append((sources, destination))
    return copies


def _context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[Path]:
    """The files of the build context that a COPY source names (a glob, a file or a directory)."""
    found: list[Path] = []
    for path in sorted(ROOT.glob(source.rstrip("/"))):
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        found += [p for p in candidates if in_context(p.relative_to(ROOT).as_posix(), rules)]
    return found


def test_stages_base_images_and_flavors() -> None:
    args = _args(STEPS)
    assert args["FLAVOR"] == "cpu"
    assert args["CPU_BASE"] == "python:3.11-slim"
    assert args["GPU_BASE"].startswith("nvidia/cuda:13.")
    froms = [s.text for s in STEPS if s.instruction == "FROM"]
    assert "${CPU_BASE} AS base-cpu" in froms
    assert "${GPU_BASE} AS base-gpu" in froms
    assert "base-${FLAVOR} AS base" in froms
    assert list(STAGES)[-2:] == ["builder", "runtime"]
    assert "COPY --from=builder /opt/venv /opt/venv" in [f"COPY {s.text}" for s in RUNTIME]


def test_builder_installs_only_the_hashed_lock_and_the_project_wheel() -> None:
    runs = " ".join(s.text for s in BUILDER if s.instruction == "RUN")
    assert "pip install --require-hashes -r" in runs
    assert "lock=requirements.lock" in runs
    assert "lock=requirements-gpu.lock" in runs
    assert "pip wheel --no-deps -w /wheels ." in runs
    assert "pip install --no-index --find-links /wheels infergate" in runs
    assert not [s for s in BUILDER if s.instruction == "RUN" and re.search(r"pip install (?!--)", s.text)]


def test_runtime_is_non_root_exposes_the_ports_and_checks_health() -> None:
    user = _one(RUNTIME, "USER").text
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER must be numeric and non-root: {user}"
    assert {int(p) for p in _one(RUNTIME, "EXPOSE").text.split()} == {8001, 8002, 8090}
    health = _one(RUNTIME, "HEALTHCHECK").text
    options, _, command = health.partition("CMD ")
    assert "--start-period=" in options
    assert _exec_form(command) == ["infergate-health", "--target", "127.0.0.1:8001"]
    cmd = _exec_form(_one(RUNTIME, "CMD").text)
    assert cmd[0] == "infergate-gateway"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--registry") + 1] == "/registry"
    assert not [s for s in RUNTIME if s.instruction == "ENTRYPOINT"], "the command must select the program"


def test_every_program_started_by_the_image_or_the_manifests_is_a_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    programs = {_exec_form(_one(RUNTIME, "CMD").text)[0]}
    programs.add(_exec_form(_one(RUNTIME, "HEALTHCHECK").text.partition("CMD ")[2])[0])
    for manifest in [*K8S.rglob("*.yaml"), *KSERVE.glob("*.yaml")]:
        programs.update(re.findall(r'command: \["(infergate-[a-z]+)"\]', manifest.read_text()))
    assert programs == {"infergate-gateway", "infergate-health", "infergate-monitor"}
    assert programs <= set(scripts)


def test_dockerignore_keeps_what_the_builder_copies_and_nothing_private() -> None:
    rules = _ignore_rules()
    for sources, _ in _copies():
        for source in sources:
            assert _context_files(source, rules), f"COPY {source}: nothing of it is in the build context"
    for package in ("gateway", "monitor", "registry", "protos", "loadtests"):
        assert in_context(f"{package}/__init__.py", rules)
        assert not in_context(f"{package}/__pycache__/__init__.cpython-311.pyc", rules)
    assert in_context("requirements.lock", rules)
    for private in (
        ".git/HEAD",
        ".venv/pyvenv.cfg",
        "tests/__init__.py",
        "requirements-dev.lock",
        "Makefile",
    ):
        assert not in_context(private, rules), private
    assert not in_context("demo-registry/classifier/1/model.onnx", rules)


# -- the build and run steps as plain commands -------------------------------------------------------


def _lock_pins() -> dict[str, str]:
    """name -> version of every requirements.lock pin whose environment marker holds here."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if match and (match.group(3) is None or Marker(match.group(3)).evaluate()):
            pins[match.group(1)] = match.group(2)
    return pins


def _link_lock_distributions(venv: Path) -> None:
    """Makes exactly the lock's distributions (as installed in .venv by `make install`) importable in venv."""
    deps = venv / "lock-deps"
    deps.mkdir()
    for name, version in _lock_pins().items():
        dist = importlib.metadata.distribution(name)
        assert dist.version == version, (
            f".venv has {name} {dist.version}, the lock {version}: run make install"
        )
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            link = deps / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "infergate-lock-deps.pth").write_text(f"{deps}\n")
    # What the venv brought itself (Python 3.11's venv installs pip and setuptools) would shadow the linked
    # pins; installing the lock would replace it, so it goes.
    own = [p.name.split("-")[0] for p in site.glob("*.dist-info")]
    shadowing = [name for name in _lock_pins() if name.replace("-", "_").lower() in {o.lower() for o in own}]
    if shadowing:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", *shadowing],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr


@dataclass(frozen=True)
class Image:
    venv: Path
    workdir: Path
    env: dict[str, str]

    def run(self, command: list[str], timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _remap(text: str, paths: dict[str, Path]) -> str:
    """Container paths (whole path components, in one pass) replaced by their stand-ins here."""
    alternatives = "|".join(re.escape(p) for p in sorted(paths, key=len, reverse=True))
    pattern = rf"(?<![\w./-])({alternatives})(?=[/\s\"':]|$)"
    return re.sub(pattern, lambda m: str(paths[m.group(1)]), text)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The builder stage replayed: its COPYs from the build context, its RUN lines verbatim."""
    root = tmp_path_factory.mktemp("image")
    src, workdir = root / "src", root / "workdir"
    workdir.mkdir()
    paths = {"/opt/venv": root / "venv", "/wheels": root / "wheels"}
    rules = _ignore_rules()
    for sources, destination in _copies():
        for source in sources:
            for file in _context_files(source, rules):
                relative = file.relative_to(ROOT)
                if destination != "./":  # COPY dir/ dir/: the directory's contents under destination
                    relative = Path(destination) / file.relative_to(ROOT / source.rstrip("/"))
                elif not source.endswith("/"):
                    relative = Path(file.name)
                (src / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, src / relative)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # python3: the interpreter of the suite
    for step in [*STAGES["base"], *BUILDER]:
        if step.instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", step.text)))
        if step.instruction == "ARG" and step.text == "FLAVOR":
            env["FLAVOR"] = _args(STEPS)["FLAVOR"]
        if step.instruction != "RUN":
            continue
        if "--require-hashes" in step.text and not FULL_LOCK_INSTALL:
            _link_lock_distributions(paths["/opt/venv"])
            continue
        done = subprocess.run(
            ["sh", "-c", _remap(step.text, paths)],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"RUN {step.text}\n{done.stdout}\n{done.stderr}"
    runtime_env = {k: v for k, v in env.items() if k != "FLAVOR"}
    for step in RUNTIME:
        if step.instruction == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", step.text):
                value = _remap(value, {**paths, "/tmp": root / "tmp"}).replace("${FLAVOR}", "cpu")
                runtime_env[key] = value.replace("$PATH", runtime_env["PATH"])
    return Image(paths["/opt/venv"], workdir, runtime_env)


@pytest.mark.slow
def test_installed_programs_come_from_the_wheel_and_answer_help(image: Image) -> None:
    where = image.run(
        [str(image.venv / "bin" / "python"), "-c", "import gateway, monitor; print(gateway.__file__)"]
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(image.venv), where.stdout
    for program in ("infergate-gateway", "infergate-health", "infergate-registry"):
        done = image.run([program, "--help"])
        assert (done.returncode, program in done.stdout) == (0, True), done.stderr
    # The monitor's numba kernels compile at import (~20 s cold); --help needs only the imports and the CLI.
    done = image.run(["infergate-monitor", "--help"], NUMBA_DISABLE_JIT="1")
    assert (done.returncode, "infergate-monitor" in done.stdout) == (0, True), done.stderr


@pytest.fixture
def gateway(image: Image, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The image's CMD on a registry, on loopback and free ports instead of 0.0.0.0:8001 and :8002."""
    registry = build_registry(tmp_path / "registry", {"mlp": mlp_model()})
    cmd = _exec_form(_one(RUNTIME, "CMD").text)
    cmd = [str(registry) if a == "/registry" else "127.0.0.1" if a == "0.0.0.0" else a for a in cmd]
    process = subprocess.Popen(
        [*cmd, "--port", "0", "--metrics-port", "0", "--no-sampling", "--grace-seconds", "5"],
        cwd=image.workdir,
        env=image.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    target = ""
    for line in process.stdout:
        match = LISTENING.search(line)
        if match:
            target = f"127.0.0.1:{match.group(1)}"
            break
    try:
        assert target, "the gateway did not start"
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


@pytest.mark.slow
def test_default_command_serves_and_the_healthcheck_follows_it(
    image: Image, gateway: tuple[subprocess.Popen[str], str]
) -> None:
    process, target = gateway
    health = _exec_form(_one(RUNTIME, "HEALTHCHECK").text.partition("CMD ")[2])
    health = [target if a == "127.0.0.1:8001" else a for a in health]
    done = image.run(health)
    assert (done.returncode, done.stdout.strip()) == (0, f"{target}: SERVING"), done.stderr
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    done = image.run(health)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unreachable" in done.stderr
