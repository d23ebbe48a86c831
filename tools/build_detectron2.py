#!/usr/bin/env python
"""Build detectron2 0.6 as a pure-Python wheel from PyPI's ``pb1-detectron2==0.6`` sdist.

detectron2 publishes no wheel on PyPI. ``pb1-detectron2==0.6`` carries upstream v0.6's ``detectron2/``
package file for file, minus the C++ sources (``detectron2/layers/csrc``) and plus the model-zoo configs;
its own setup.py fails, because it compiles those missing sources. This script:

1. downloads the sdist from the package index (PIP_INDEX_URL or pypi.org),
2. checks its sha256,
3. applies each fix below as a named step (each one asserts that the text it replaces is there),
4. writes a pure-Python ``setup.py`` (no C++ extension, no ``black`` pin, model-zoo configs included),
5. builds a wheel into ``--wheel-dir`` and prints its path on the last line of stdout.

Every fix is something upstream detectron2 has since fixed or plain bit-rot against today's
numpy / Pillow / setuptools / torch. Nothing here changes detectron2's behaviour otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

SDIST_PROJECT = "pb1-detectron2"
SDIST_REQUIREMENT = "pb1-detectron2==0.6"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
BUILD_TAG = "quantmimic-pure-python-2"

# Replaces ``from detectron2 import _C`` in modules whose compiled ops are optional: the import
# succeeds and any use of a missing op raises MissingCompiledOpError with one clear sentence.
MISSING_OPS_MODULE = '''\
"""Stand-in for detectron2's compiled ops in a pure-Python build (written by QuantMimic's
tools/build_detectron2.py). Using a missing op raises one clear error instead of an ImportError
at import time."""

BUILD = {build!r}
FIXES = {fixes!r}


class MissingCompiledOpError(RuntimeError):
    pass


class _MissingOps:
    def __init__(self, feature):
        self._feature = feature

    def __getattr__(self, name):
        raise MissingCompiledOpError(
            f"{{self._feature}} needs detectron2's compiled op `{{name}}`, which this pure-Python "
            "detectron2 0.6 build does not have; install detectron2 from source "
            "(https://github.com/facebookresearch/detectron2) to use it."
        )


def load_compiled_ops(feature):
    """Return detectron2._C if it was compiled, else a stand-in that raises on use."""
    try:
        from detectron2 import _C

        return _C
    except ImportError:
        return _MissingOps(feature)
'''

SETUP_PY = """\
# Pure-Python setup for detectron2 0.6, written by QuantMimic's tools/build_detectron2.py.
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6+{local}",
    description="detectron2 0.6 without compiled ops (built from PyPI pb1-detectron2 0.6)",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/*.yaml", "configs/**/*.yaml", "configs/**/*.py"]}},
    python_requires=">=3.7",
)
"""


def _replace(root: Path, rel: str, old: str, new: str, count: int = 1) -> None:
    path = root / rel
    text = path.read_text()
    found = text.count(old)
    if found != count:
        raise SystemExit(f"build_detectron2: expected {count} x {old!r} in {rel}, found {found}")
    path.write_text(text.replace(old, new))


def _optional_compiled_ops(root: Path) -> None:
    """Layers that need _C import it lazily; using them raises MissingCompiledOpError."""
    for rel, feature in [
        ("detectron2/layers/deform_conv.py", "Deformable convolution"),
        ("detectron2/layers/rotated_boxes.py", "Rotated box IoU"),
        ("detectron2/layers/roi_align_rotated.py", "Rotated ROIAlign"),
    ]:
        _replace(
            root,
            rel,
            "from detectron2 import _C\n",
            f'from detectron2._missing_ops import load_compiled_ops\n\n_C = load_compiled_ops("{feature}")\n',
        )
    _replace(
        root,
        "detectron2/layers/nms.py",
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n",
        "    if not hasattr(torch.ops.detectron2, 'nms_rotated'):\n"
        "        from detectron2._missing_ops import load_compiled_ops\n\n"
        '        return load_compiled_ops("Rotated NMS").nms_rotated\n'
        "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)\n",
    )


def _coco_eval_fallback(root: Path) -> None:
    """coco_evaluation falls back to pycocotools' COCOeval when the fast C++ evaluator is missing."""
    _replace(
        root,
        "detectron2/evaluation/coco_evaluation.py",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        "try:\n"
        "    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
        "except ImportError:  # no compiled ops: use pycocotools' evaluator (as upstream does)\n"
        "    COCOeval_opt = COCOeval\n",
    )


def _pillow_linear(root: Path) -> None:
    """Pillow >= 10 removed Image.LINEAR (an alias of BILINEAR)."""
    _replace(root, "detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR")


NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str|object)\b(?![_\d.(])")


def _numpy_aliases(root: Path) -> None:
    """numpy 1.24 removed np.bool/np.int/np.float/np.str/np.object: use the builtins."""
    changed = 0
    for path in sorted((root / "detectron2").rglob("*.py")):
        text = path.read_text()
        new, n = NUMPY_ALIAS.subn(r"\1", text)
        if n:
            path.write_text(new)
            changed += n
    if changed == 0:
        raise SystemExit("build_detectron2: found no numpy aliases to replace; is this detectron2 0.6?")


def _no_pkg_resources(root: Path) -> None:
    """model_zoo finds its configs next to its own file (setuptools no longer ships pkg_resources)."""
    rel = "detectron2/model_zoo/model_zoo.py"
    _replace(root, rel, "import pkg_resources\n", "")
    _replace(
        root,
        rel,
        'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
    )


def _launch_gloo_on_cpu(root: Path) -> None:
    """engine/launch.py: use GLOO and skip CUDA device set-up when there is no GPU (as upstream)."""
    rel = "detectron2/engine/launch.py"
    _replace(
        root,
        rel,
        '    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."\n',
        "    has_gpu = torch.cuda.is_available()\n",
    )
    _replace(root, rel, 'backend="NCCL",', 'backend="NCCL" if has_gpu else "GLOO",')
    _replace(
        root,
        rel,
        "    assert num_gpus_per_machine <= torch.cuda.device_count()\n    torch.cuda.set_device(local_rank)\n",
        "    if has_gpu:\n"
        "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
        "        torch.cuda.set_device(local_rank)\n",
    )


def _map_dataset_retry(root: Path) -> None:
    """random.Random.sample() no longer accepts a set (Python >= 3.11)."""
    _replace(
        root,
        "detectron2/data/common.py",
        "self._rng.sample(self._fallback_candidates, k=1)[0]",
        "self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
    )


def _lr_scheduler_checkpoint(root: Path) -> None:
    """torch 2 schedulers derive from LRScheduler, not _LRScheduler: save/restore their state."""
    _replace(
        root,
        "detectron2/engine/hooks.py",
        "isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler)",
        "isinstance(self.scheduler, getattr(torch.optim.lr_scheduler, 'LRScheduler', "
        "torch.optim.lr_scheduler._LRScheduler))",
        count=2,
    )


def _optional_caffe2_export(root: Path) -> None:
    """detectron2.export imports its caffe2 exporters only where caffe2 is installed (as upstream), so
    TracingAdapter and the TorchScript helpers import on a torch without caffe2."""
    _replace(
        root,
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n"
        "    from caffe2.proto import caffe2_pb2 as _tmp  # noqa: F401\n"
        "    from caffe2.python import core  # noqa: F401\n"
        "except ImportError:  # caffe2 is optional\n"
        "    pass\n"
        "else:\n"
        "    from .api import *\n",
    )


FIXES = [
    ("optional-compiled-ops", _optional_compiled_ops),
    ("coco-eval-fallback", _coco_eval_fallback),
    ("pillow-linear", _pillow_linear),
    ("numpy-aliases", _numpy_aliases),
    ("no-pkg-resources", _no_pkg_resources),
    ("launch-gloo-on-cpu", _launch_gloo_on_cpu),
    ("map-dataset-retry", _map_dataset_retry),
    ("lr-scheduler-checkpoint", _lr_scheduler_checkpoint),
    ("optional-caffe2-export", _optional_caffe2_export),
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(cache: Path) -> Path:
    """Fetch the sdist from the package index's simple page (pip >= 24 refuses to read its metadata)."""
    sdist = cache / SDIST_NAME
    if not sdist.exists():
        cache.mkdir(parents=True, exist_ok=True)
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        with urllib.request.urlopen(f"{index}/{SDIST_PROJECT}/", timeout=60) as page:
            links = re.findall(r'href="([^"]+)"', page.read().decode())
        (url,) = [u for u in links if u.split("#")[0].endswith("/" + SDIST_NAME)] or [None]
        if url is None:
            raise SystemExit(f"build_detectron2: {index}/{SDIST_PROJECT}/ lists no {SDIST_NAME}")
        url = urllib.parse.urljoin(f"{index}/{SDIST_PROJECT}/", url.split("#")[0])
        partial = sdist.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=120) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(partial, sdist)
    actual = _sha256(sdist)
    if actual != SDIST_SHA256:
        sdist.unlink()
        raise SystemExit(
            f"build_detectron2: {SDIST_NAME} has sha256 {actual}, expected {SDIST_SHA256}; "
            "the file on the index changed: check it before trusting it."
        )
    return sdist


def build(cache: Path, wheel_dir: Path) -> Path:
    sdist = download_sdist(cache)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        for name, fix in FIXES:
            fix(src)
            print(f"build_detectron2: applied fix {name}", file=sys.stderr)
        (src / "detectron2" / "_missing_ops.py").write_text(
            MISSING_OPS_MODULE.format(build=f"{SDIST_REQUIREMENT} {BUILD_TAG}", fixes=[n for n, _ in FIXES])
        )
        for leftover in ["setup.py", "setup.cfg", "pyproject.toml"]:
            (src / leftover).unlink(missing_ok=True)
        (src / "setup.py").write_text(SETUP_PY.format(local=BUILD_TAG.replace("-", ".")))
        shutil.rmtree(src / "detectron2.egg-info", ignore_errors=True)
        pb1_info = list(src.glob("*.egg-info"))
        for info in pb1_info:
            shutil.rmtree(info)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        cmd += ["-w", str(wheel_dir), str(src)]
        subprocess.run(cmd, check=True)
    wheels = sorted(wheel_dir.glob("detectron2-0.6*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise SystemExit(f"build_detectron2: pip wheel wrote no detectron2 wheel into {wheel_dir}")
    return wheels[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".build-cache"), help="where the sdist is kept")
    parser.add_argument("--wheel-dir", type=Path, default=Path(".build-cache/wheels"))
    args = parser.parse_args()
    print(build(args.cache, args.wheel_dir))


if __name__ == "__main__":
    main()
