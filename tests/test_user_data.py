"""A data set of your own from the command line (quant_mimic/data/user.py): the ``--dataset`` syntax, the
registration and its number of classes, every check before training (one sentence naming the file and the
image id), and datasets/README.md's worked example run as written (a few iterations) on a small COCO and a
small VOC set generated from the built-in shapes renderer."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, STUDENT_CONFIG
from detectron2.data import DatasetCatalog, MetadataCatalog

from quant_mimic.config import build_config
from quant_mimic.data import user
from quant_mimic.data.user import (
    check_user_dataset,
    configure_classes,
    parse_dataset_spec,
    register_user_datasets,
    write_example_datasets,
)
from quant_mimic.errors import QuantMimicInputError

README = REPO / "datasets" / "README.md"
SHAPES = ["circle", "square", "triangle", "star", "ring"]  # the COCO categories, in id order
FEW_ITERATIONS = [
    "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.fixture
def example(tmp_path):
    """The worked example's data sets in a fresh folder: {role: path}."""
    return write_example_datasets(tmp_path / "example")


@pytest.fixture
def forget():
    """Names to unregister after the test (catalogs and user.py's own record)."""
    names: list[str] = []
    yield names
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        user._REGISTERED.pop(name, None)


def coco_spec(name, paths, split="train"):
    return f"{name}=coco:{paths[f'coco_{split}_json']}:{paths[f'coco_{split}_images']}"


def one_sentence(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("."), msg
    for part in parts:
        assert str(part) in msg, (part, msg)
    return msg


# --- the --dataset syntax --------------------------------------------------------------------------------


def test_spec_syntax(example):
    coco = parse_dataset_spec(f"a=coco:{example['coco_val_json']}")  # images default to the json's folder
    assert (coco.format, coco.image_root) == ("coco", str(example["coco_val_json"].parent))
    voc = parse_dataset_spec(f"b=voc:{example['voc']}:val:circle,ring")
    assert (voc.split, voc.classes, voc.image_root) == (
        "val",
        ("circle", "ring"),
        str(example["voc"] / "JPEGImages"),
    )
    assert parse_dataset_spec(voc.canonical()) == voc
    bad = {
        "nothing": "is not of the form NAME=coco:JSON[:IMAGES]",
        "a=yaml:x.yaml": "format 'yaml' is not one of coco, voc",
        "a b=coco:x.json": "may hold only letters",
        f"a=coco:{example['voc']}/missing.json": "missing.json does not exist",
        f"a=coco:{example['coco_val_json']}:/no/such/folder": "the image folder /no/such/folder does not exist",
        f"a=voc:{example['voc']}": "a VOC data set is NAME=voc:DIR:SPLIT",
        f"a=voc:{example['voc']}:val:cat,cat": "repeats a name",
        "a=voc:/no/such/VOC2007:test": "the VOC folder /no/such/VOC2007 does not exist",
    }
    for text, words in bad.items():
        with pytest.raises(QuantMimicInputError) as err:
            parse_dataset_spec(text)
        one_sentence(err, words)
    with pytest.raises(QuantMimicInputError, match="already a registered data set"):
        register_user_datasets([f"quantmimic_shapes_train=coco:{example['coco_val_json']}"])
    with pytest.raises(QuantMimicInputError, match="gives the name 'a' twice"):
        register_user_datasets([coco_spec("a", example), coco_spec("a", example, "val")])


# --- registration and the number of classes -----------------------------------------------------------


def test_registration_classes_and_num_classes(example, forget):
    specs = [coco_spec("u_ct", example), coco_spec("u_cv", example, "val")]
    specs += [f"u_vt=voc:{example['voc']}:train", f"u_vv=voc:{example['voc']}:val"]
    forget += ["u_ct", "u_cv", "u_vt", "u_vv", "u_vg"]
    datasets = register_user_datasets(specs)
    assert MetadataCatalog.get("u_ct").thing_classes == SHAPES  # COCO: categories in id order
    assert MetadataCatalog.get("u_vv").thing_classes == sorted(SHAPES)  # VOC: sorted names of both splits
    meta = MetadataCatalog.get("u_vv")
    assert (meta.evaluator_type, meta.split, meta.year) == ("pascal_voc", "val", 2012)
    assert MetadataCatalog.get("u_cv").evaluator_type == "coco"
    assert len(DatasetCatalog.get("u_ct")) == 24 and len(DatasetCatalog.get("u_vv")) == 8
    assert register_user_datasets(specs) == datasets  # the same values again: nothing to do

    def cfg_for(train, test, opts=()):
        opts = ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{test}',)", *opts]
        return build_config(str(STUDENT_CONFIG), opts), opts

    cfg, opts = cfg_for("u_ct", "u_cv", ["MODEL.ROI_HEADS.NUM_CLASSES", "9"])
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2  # as if the config file said 2
    (note,) = configure_classes(cfg, opts[:4], datasets)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5 and "set to 5, the classes of 'u_ct' (circle, square" in note
    cfg, opts = cfg_for("u_ct", "u_cv", ["MODEL.ROI_HEADS.NUM_CLASSES", "9"])
    assert "is 9 as the command line sets it" in configure_classes(cfg, opts, datasets)[0]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 9
    with pytest.raises(QuantMimicInputError) as err:
        configure_classes(*cfg_for("u_ct", "u_cv", ["MODEL.ROI_HEADS.NUM_CLASSES", "3"]), datasets)
    one_sentence(err, "MODEL.ROI_HEADS.NUM_CLASSES 3 is less than the 5 classes of 'u_ct'")
    with pytest.raises(QuantMimicInputError) as err:  # same classes, another order: refused
        configure_classes(*cfg_for("u_ct", "u_vv"), datasets)
    one_sentence(err, "Data sets 'u_ct'", "and 'u_vv'", "have different classes")
    with pytest.raises(QuantMimicInputError) as err:  # --dataset given, the config names none of them
        configure_classes(*cfg_for("quantmimic_shapes_mini_train", "quantmimic_shapes_mini_val"), datasets)
    one_sentence(err, "neither DATASETS.TRAIN nor DATASETS.TEST names it")
    # classes given in the COCO order: a VOC training set and a COCO val set agree
    (given,) = register_user_datasets([f"u_vg=voc:{example['voc']}:train:{','.join(SHAPES)}"])
    assert given.classes == tuple(SHAPES) and MetadataCatalog.get("u_vg").thing_classes == SHAPES
    cfg, opts = cfg_for("u_vg", "u_cv")
    configure_classes(cfg, opts, [given])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5


# --- the checks before training ------------------------------------------------------------------------


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def first_annotation(data: dict) -> dict:
    return data["annotations"][0]


def set_box(box):
    return lambda d: first_annotation(d).update(bbox=box)


# (what to break in the val split of the COCO example, the words of the sentence); image id k is k-1.png
COCO_FAULTS = {
    "image missing": (
        lambda p: (p["coco_val_images"] / "000003.png").unlink(),
        ["000003.png (image id 4 in", "does not exist"],
    ),  # fmt: skip
    "image truncated": (
        lambda p: truncate(p["coco_val_images"] / "000002.png"),
        ["000002.png (image id 3 in", "cannot be read"],
    ),  # fmt: skip
    "not an image": (
        lambda p: (p["coco_val_images"] / "000001.png").write_text("hello"),
        ["000001.png (image id 2 in", "cannot be read"],
    ),  # fmt: skip
    "image of another size": (
        lambda p: cv2.imwrite(str(p["coco_val_images"] / "000005.png"), np.zeros((96, 64, 3), np.uint8)),
        ["000005.png (image id 6 in", "is 64x96 pixels but", "says 96x96"],
    ),
    "box outside": (
        lambda p: edit_json(p["coco_val_json"], set_box([50, 40, 60, 10])),
        [
            "of image id 1 (000000.png) with bbox [50, 40, 60, 10], which reaches outside its 96x96 image",
            "[x1, y1",
        ],
    ),
    "box of zero width": (
        lambda p: edit_json(p["coco_val_json"], set_box([5, 5, 0, 10])),
        ["of image id 1 (000000.png) with bbox [5, 5, 0, 10] of non-positive width or height"],
    ),
    "unknown image id": (
        lambda p: edit_json(p["coco_val_json"], lambda d: first_annotation(d).update(image_id=99)),
        ["annotation 1 with image_id 99, which is not in 'images'"],
    ),
    "unknown category": (
        lambda p: edit_json(p["coco_val_json"], lambda d: first_annotation(d).update(category_id=9)),
        ["annotation 1 of image id 1 (000000.png) with category_id 9, which is not in 'categories'"],
    ),
    "image without width": (
        lambda p: edit_json(p["coco_val_json"], lambda d: d["images"][2].pop("width")),
        ["has image id 3 without 'width'"],
    ),
    "annotation ids repeated": (
        lambda p: edit_json(p["coco_val_json"], lambda d: d["annotations"][1].update(id=1)),
        ["has two annotations with id 1"],
    ),
    "no area (evaluated set)": (
        lambda p: edit_json(p["coco_val_json"], lambda d: first_annotation(d).pop("area")),
        ["annotation 1 of image id 1 (000000.png) without an 'area', which the COCO evaluation reads"],
    ),
}


@pytest.mark.parametrize("fault", list(COCO_FAULTS))
def test_coco_check_names_file_and_image(example, forget, fault):
    break_it, words = COCO_FAULTS[fault]
    forget.append("u_fault")
    register_user_datasets([coco_spec("u_fault", example, "val")])
    assert check_user_dataset("u_fault").startswith("Data set 'u_fault' checked:")  # intact before
    break_it(example)
    with pytest.raises(QuantMimicInputError) as err:
        check_user_dataset("u_fault", for_training=True, for_evaluation=True)
    one_sentence(err, example["coco_val_json"], *words)  # every sentence names the json


def test_broken_json_gives_line_and_column(tmp_path, forget):
    (tmp_path / "a.png").write_bytes(b"")
    broken = tmp_path / "broken.json"
    broken.write_text(
        '{\n "images": [\n  {"id": 1 "file_name": "a.png", "width": 4, "height": 4}\n ],\n'
        ' "annotations": [], "categories": [{"id": 1, "name": "a"}]\n}\n'
    )
    with pytest.raises(QuantMimicInputError) as err:
        register_user_datasets([f"u_json=coco:{broken}"])
    one_sentence(
        err,
        f"The COCO annotation file {broken} is not valid JSON (Expecting ',' delimiter at line 3, column 12)",
    )


def voc_object_box(xml: Path, box) -> None:
    text = xml.read_text()
    start, end = text.index("<bndbox>"), text.index("</bndbox>")
    corners = "".join(f"<{c}>{v}</{c}>" for c, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    xml.write_text(text[:start] + f"<bndbox>{corners}" + text[end:])


VOC_FAULTS = {
    "box outside": (
        lambda v: voc_object_box(v / "Annotations" / "val_000001.xml", (10, 10, 120, 40)),
        ["val_000001.xml (image id val_000001) has object 1", "= [10, 10, 120, 40], outside its 96x96 image"],
    ),
    "box of negative size": (
        lambda v: voc_object_box(v / "Annotations" / "val_000001.xml", (40, 10, 20, 30)),
        ["val_000001.xml (image id val_000001) has object 1", "a box of non-positive size"],
    ),
    "image missing": (
        lambda v: (v / "JPEGImages" / "val_000004.jpg").unlink(),
        [
            "val_000004.jpg (image id val_000004 in",
            "val_000004.xml) does not exist: put the file there or remove val_000004 from",
            "ImageSets/Main/val.txt",
        ],
    ),
    "image truncated": (
        lambda v: truncate(v / "JPEGImages" / "val_000002.jpg"),
        ["val_000002.jpg (image id val_000002 in", "cannot be read (image file is truncated"],
    ),
    "XML without <difficult> (evaluated set)": (
        lambda v: (v / "Annotations" / "val_000003.xml").write_text(
            (v / "Annotations" / "val_000003.xml").read_text().replace("<difficult>0</difficult>", "")
        ),
        ["val_000003.xml has no <difficult>", "which the Pascal VOC evaluation reads"],
    ),
}


@pytest.mark.parametrize("fault", list(VOC_FAULTS))
def test_voc_check_names_file_and_image(example, forget, fault):
    break_it, words = VOC_FAULTS[fault]
    forget.append("u_vfault")
    register_user_datasets([f"u_vfault=voc:{example['voc']}:val"])
    check_user_dataset("u_vfault")
    break_it(example["voc"])
    with pytest.raises(QuantMimicInputError) as err:
        check_user_dataset("u_vfault", for_training=True, for_evaluation=True)
    one_sentence(err, example["voc"], *words)


def test_broken_voc_xml_is_named_at_registration(example, forget):
    (example["voc"] / "Annotations" / "train_000003.xml").write_text("<annotation><object>")
    with pytest.raises(QuantMimicInputError) as err:
        register_user_datasets([f"u_vx=voc:{example['voc']}:train"])
    one_sentence(err, "train_000003.xml is not valid XML")


# --- datasets/README.md's worked example, as written -----------------------------------------------------


def readme_commands() -> list[list[str]]:
    """The commands of the worked example block of datasets/README.md, each as an argument list."""
    text = README.read_text()
    block = text.split("<!-- worked example: begin -->")[1].split("<!-- worked example: end -->")[0]
    lines = [line for line in block.splitlines() if not line.startswith(("```", "#")) and line.strip()]
    joined = " ".join(line.rstrip("\\").strip() if line.endswith("\\") else line + "\n" for line in lines)
    return [shlex.split(cmd) for cmd in joined.splitlines() if cmd.strip()]


def run_script(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, DETECTRON2_DATASETS=str(cwd / "datasets"), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"
    )
    script = [str(REPO / a) if a.startswith("projects/") else a for a in argv[1:]]
    return subprocess.run(
        [sys.executable, *script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["python", "-c"],
        ["python", "projects/QuantMimic/train_net.py"],
        ["python", "projects/QuantMimic/train_net.py"],
        ["python", "projects/QuantMimic/demo.py"],
        ["python", "-m"],
    ]
    make_data, coco_run, voc_run, demo, pipeline = commands
    monkeypatch.chdir(tmp_path)
    exec(make_data[2], {})  # write_example_datasets('datasets/example'), here
    assert (tmp_path / "datasets/example/coco/annotations/train.json").is_file()

    for run_argv, name, first_class in (
        (coco_run, "coco", "circle, square"),
        (voc_run, "voc", "circle, ring"),
    ):
        run = run_script(run_argv + FEW_ITERATIONS, tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        out = tmp_path / "output" / f"example_{name}"
        metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
        assert "bbox/AP50" in metrics[-1]
        log = (out / "log.txt").read_text()
        assert (
            f"MODEL.ROI_HEADS.NUM_CLASSES set to 5, the classes of 'example_{name}_train' ({first_class}"
            in log
        )
        assert f"Data set 'example_{name}_train' checked:" in log and "24 images (decoded)" in log

    run = run_script(demo, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    drawn = cv2.imread(str(tmp_path / "output/example_coco/vis/000000.png"))
    assert drawn is not None and drawn.shape[:2] == (96, 96)

    from quant_mimic_tools import pipeline as pipeline_module

    assert pipeline[2] == "quant_mimic_tools.pipeline"
    pipeline_module.main(["--dry-run", *pipeline[3:]])
    stages = [shlex.split(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(stages) == 5
    for tokens in stages:
        assert tokens[tokens.index("--dataset") + 1].startswith(
            f"example_coco_train=coco:{tmp_path}/datasets/"
        )
        assert tokens[tokens.index("DATASETS.TRAIN") + 1] == "('example_coco_train',)"
        assert tokens[tokens.index("DATASETS.TEST") + 1] == "('example_coco_val',)"
    qm = stages[4]
    teacher_q = tmp_path.resolve() / "output/example_main/teacher_R18_2_FPN_quant/config.yaml"
    assert qm[qm.index("MODEL.QUANT_MIMIC.TEACHER_CONFIG") + 1] == str(teacher_q)

    # bad data: one line on stderr, exit status 2, before training (train_net.py's cli, in this process)
    val_json = tmp_path / "datasets/example/coco/annotations/val.json"
    text = val_json.read_text()
    line = next(k for k, t in enumerate(text.splitlines(), 1) if "[" in t)
    val_json.write_text(text.replace("[", "[ {", 1))  # an object without a key
    train_net = load_train_net()
    with pytest.raises(SystemExit) as exit_info:
        train_net.cli(
            [str(REPO / a) if a.startswith("projects/") else a for a in coco_run[2:]]
            + ["OUTPUT_DIR", "output/bad"]
        )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        f"train_net.py: error: The COCO annotation file {val_json} is not valid JSON ("
    )
    assert f"at line {line}, column" in lines[0] and not (tmp_path / "output/bad").exists()
    for name in ("example_coco_train", "example_coco_val"):  # registered by cli() in this process
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                catalog.remove(name)
        user._REGISTERED.pop(name, None)


def load_train_net():
    """projects/QuantMimic/train_net.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("qm_train_net", REPO / "projects/QuantMimic/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
