"""The paper's two settings on toy data in the official layouts (quant_mimic.data.official_toy): Pascal VOC
(configs/voc/, Faster R-CNN, VOC07 AP50 per class) and WIDER FACE (configs/wider_face/, grayscale R-FCN
with OHEM, official easy / medium / hard AP), run with the real configs through train_net.py and the main
job (``pipeline --setting voc|wider_face``), and the teachers' ImageNet initialisation.

The two whole main jobs (five stages each, the report, a resumed stage, the demo on the export) take about
2-4 min each on 2 shared CPU cores, so they are opt-in: ``QUANTMIMIC_SETTINGS_E2E=1 pytest
tests/test_settings_e2e.py``. The default suite runs the rest: the data, the chains' wiring and tables, the
ImageNet conversion, and one real train_net.py stage per setting (the WIDER FACE QM student with its
teacher check, a resume and the demo on its export; the VOC scratch student with per-class AP50).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import CONFIGS, PROJECT, REPO, read_metrics, run_train_net
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from quant_mimic.config import build_config
from quant_mimic.data.official_toy import (
    TOY_VOC_CLASSES,
    TOY_WIDER_IMAGES,
    WIDER_DIFFICULTY_MIN_SIZE,
    write_toy_voc,
    write_toy_wider_face,
)
from quant_mimic.data.voc import register_checked_voc
from quant_mimic.data.wider_face import register_wider_face
from quant_mimic.errors import QuantMimicInputError
from quant_mimic.evaluation.wider_face import load_wider_face_gt
from quant_mimic_tools import convert
from quant_mimic_tools.chains import CHAINS, VOC, WIDER_FACE
from quant_mimic_tools.pipeline import (
    JOB_RECORD,
    chain_stages,
    check_job,
    get_parser,
    resolve_job,
    write_results,
)
from quant_mimic_tools.runner import stage_command

E2E = os.environ.get("QUANTMIMIC_SETTINGS_E2E") == "1"
DEMO = PROJECT / "demo.py"
VOC_TRAIN_SETS = ("voc_2007_trainval", "voc_2012_trainval")  # configs/voc: DATASETS.TRAIN


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    """Both toy data sets under one DETECTRON2_DATASETS folder."""
    root = tmp_path_factory.mktemp("official_toy")
    write_toy_voc(root)
    write_toy_wider_face(root)
    return root


@pytest.fixture
def registered(toy_root):
    """The configs' data set names read from ``toy_root`` in this process; restored afterwards."""
    register_checked_voc(toy_root)
    register_wider_face(toy_root)
    yield toy_root
    register_checked_voc(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    register_wider_face(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def test_toy_data_loads_under_the_configs_data_set_names(registered):
    counts = {name: len(DatasetCatalog.get(name)) for name in (*VOC_TRAIN_SETS, "voc_2007_test")}
    assert counts == {"voc_2007_trainval": 16, "voc_2012_trainval": 16, "voc_2007_test": 12}
    test = DatasetCatalog.get("voc_2007_test")
    trainval_ids = {d["image_id"] for d in DatasetCatalog.get("voc_2007_trainval")}
    assert not trainval_ids & {d["image_id"] for d in test}  # one JPEG per id, as in VOC
    names = MetadataCatalog.get("voc_2007_test").thing_classes
    used = {names[a["category_id"]] for d in test for a in d["annotations"]}
    assert used == set(TOY_VOC_CLASSES)
    for name in ("wider_face_train", "wider_face_val"):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == TOY_WIDER_IMAGES[name.split("_")[-1]]
        assert all("/" in d["image_id"] for d in dicts)  # official ids: "<event>/<image>"
    val = DatasetCatalog.get("wider_face_val")
    gt = load_wider_face_gt(MetadataCatalog.get("wider_face_val").gt_dir)
    assert sum(len(f) for f in gt.files) == len(val)
    faces = sum(len(d["annotations"]) for d in val)
    assert sum(len(b) for per_event in gt.boxes for b in per_event) == faces
    counted = {k: sum(len(i) for e in v for i in e) for k, v in gt.counted.items()}
    invalid = sum(a["iscrowd"] for d in val for a in d["annotations"])
    assert 0 < counted["easy"] < counted["medium"] <= counted["hard"] == faces - invalid
    assert WIDER_DIFFICULTY_MIN_SIZE["hard"] == 0


def test_chains_run_the_papers_configs_with_the_teacher_runs_config(tmp_path):
    for setting, teacher in (
        (VOC, "voc/teacher_R18_FPN.yaml"),
        (WIDER_FACE, "wider_face/teacher_VGG4_RFCN.yaml"),
    ):
        stages = chain_stages(tmp_path, [0, 1], chain=setting, teacher_weights="")
        assert [s.config for s in stages[:5]] == [s.config for s in setting.stages()]
        assert stages[0].config == teacher and stages[0].opts == ["MODEL.WEIGHTS", ""]
        assert stages[1].opts == ["MODEL.WEIGHTS", str(tmp_path / setting.teacher.name / "model_final.pth")]
        assert len(stages) == 8 and stages[5].name == "student_scratch_seed1"
        for stage, teacher_run in ((stages[3], setting.teacher), (stages[4], setting.teacher_quant)):
            key = stage.opts.index("MODEL.QUANT_MIMIC.TEACHER_CONFIG")
            assert stage.opts[key + 1] == str(tmp_path / teacher_run.name / "config.yaml")
        assert set(stages[4].paper) == set(setting.paper_metrics)
        for stage in stages:  # every config exists and is the paper's setting's own
            assert (CONFIGS / stage.config).is_file() and stage.config.startswith(f"{setting.name}/")
    single = chain_stages(tmp_path, [0], chain=CHAINS["voc_single"])  # the paper's single-level Faster R-CNN
    assert [s.config for s in single] == [
        s.config.replace("_FPN", "_single") for s in chain_stages(tmp_path, [0], chain=VOC)
    ]
    assert all((CONFIGS / s.config).is_file() for s in single)
    assert chain_stages(tmp_path, [0], chain=VOC)[0].opts == []  # the config's ImageNet weights
    assert VOC.paper_metrics == ("AP50",) and WIDER_FACE.done_key == "wider_face/easy"


def fake_metrics(setting, value: float) -> dict:
    row = {m.key: value for m in setting.metrics}
    if setting is VOC:
        row.update({f"bbox/AP50-{c}": value for c in TOY_VOC_CLASSES}, **{"bbox/AP50-cow": float("nan")})
    return row


@pytest.mark.parametrize("setting", [VOC, WIDER_FACE], ids=lambda s: s.name)
def test_results_table_has_the_setting_metric_and_the_papers_numbers(tmp_path, setting):
    stages = chain_stages(tmp_path, [0, 1], chain=setting)
    results = {s.name: fake_metrics(setting, 10.0 + i) for i, s in enumerate(stages)}
    write_results(tmp_path, stages, results, setting)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["setting"] == setting.name
    qm = record["runs"][4]
    assert qm["paper"] == setting.students[2].paper and qm[setting.metrics[0].label] == 14.0
    (summary,) = [e for e in record["over_seeds"] if e["model"] == "student_qm"]
    assert summary[f"{setting.paper_metrics[0]}_mean"] == 15.5  # seeds 0 and 1: 14 and 17
    table = (tmp_path / "results.md").read_text()
    header = table.splitlines()[2]
    for label in [m.label for m in setting.metrics] + [f"paper {k}" for k in setting.paper_metrics]:
        assert f"| {label} |" in header
    paper_cells = " | ".join(f"{v:.1f}" for v in setting.students[2].paper.values())
    assert "| student_qm_seed0 | 14.0 |" in table and paper_cells in table
    if setting is VOC:  # per-class AP50 of the classes the val set has (cow: no ground truth)
        assert "| car | 10.0 | 11.0 |" in table and "| cow |" not in table


def parse(*argv):
    return get_parser().parse_args(list(argv))


def test_the_job_record_keeps_setting_data_and_smoke_apart(tmp_path):
    out = tmp_path / "out"
    job = resolve_job(parse("--setting", "wider_face", "--smoke"), out)
    assert job.chain is WIDER_FACE and job.data_root == out / "toy_data" and job.teacher_weights == ""
    out.mkdir()
    (out / JOB_RECORD).write_text(json.dumps(job.record()))
    assert resolve_job(parse(), out) == job  # a rerun needs none of the options
    for argv, words in [
        (["--setting", "voc"], "setting 'wider_face'"),
        (["--data-root", str(tmp_path)], "data_root"),
        (["--init-weights", "x.pkl"], "teacher_weights"),
    ]:
        with pytest.raises(QuantMimicInputError, match=words):
            resolve_job(parse(*argv), out)
    with pytest.raises(QuantMimicInputError, match="reads its own data sets from --data-root"):
        resolve_job(
            parse("--setting", "voc", "--dataset", "t=coco:t.json", "--train", "t", "--val", "t"), tmp_path
        )
    real = resolve_job(parse("--setting", "voc", "--data-root", str(tmp_path)), tmp_path / "real")
    assert real.data_root == tmp_path and real.teacher_weights is None and not real.smoke
    assert real.env()["DETECTRON2_DATASETS"] == str(tmp_path)


def test_missing_data_or_imagenet_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the teacher config's output/imagenet/resnet18.pkl is relative
    job = resolve_job(parse("--setting", "voc", "--data-root", str(tmp_path)), tmp_path / "out")
    with pytest.raises(QuantMimicInputError, match=r"holds no VOC2007/.*--smoke"):
        check_job(job, tmp_path / "out")
    write_toy_voc(tmp_path)
    with pytest.raises(
        QuantMimicInputError, match=r"output/imagenet/resnet18.pkl .* do not exist.*convert --model resnet18"
    ):
        check_job(job, tmp_path / "out")
    job.teacher_weights = ""
    check_job(job, tmp_path / "out")


def fill_bn_statistics(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_voc_teacher_starts_from_converted_imagenet_resnet18(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = CONFIGS / "voc" / "teacher_R18_FPN.yaml"
    tv = fill_bn_statistics(torchvision.models.resnet18(weights=None))
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    cfg = build_config(str(config), ["MODEL.DEVICE", "cpu"])
    args = [
        "--model",
        "resnet18",
        "--input",
        "resnet18.pth",
        "--output",
        cfg.MODEL.WEIGHTS,
        "--config-file",
        str(config),
    ]
    assert convert.main(args) == 0 and (tmp_path / "output" / "imagenet" / "resnet18.pkl").is_file()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, tv.conv1.weight)  # RGB input, as torchvision
    assert torch.equal(bottom_up.res5[1].conv2.norm.running_var, tv.layer4[1].bn2.running_var)
    assert cfg.INPUT.FORMAT == "RGB" and convert.format_notes(str(config), grayscale=False) == []


def test_wider_face_teacher_starts_from_imagenet_vgg16_narrowed_to_vgg_1_4(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = CONFIGS / "wider_face" / "teacher_VGG4_RFCN.yaml"
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("classifier")}  # 120M values not needed
    torch.save(state, tmp_path / "vgg16.pth")
    cfg = build_config(str(config), ["MODEL.DEVICE", "cpu"])
    args = ["--model", "vgg16", "--input", "vgg16.pth", "--output", cfg.MODEL.WEIGHTS, "--grayscale"]
    assert convert.main([*args, "--select-filters"]) == 2  # needs the target's width
    assert "--select-filters needs --config-file" in capsys.readouterr().err
    assert convert.main([*args, "--select-filters", "--config-file", str(config)]) == 0
    assert capsys.readouterr().err == ""  # grayscale input with the luma mean: no note
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    backbone = model.backbone
    first = state["features.0.weight"].sum(dim=1, keepdim=True)  # Tensor[64, 1, 3, 3]
    kept = torch.sort(torch.topk(first.abs().sum(dim=(1, 2, 3)), 16).indices).values
    assert backbone.conv1_1.weight.shape == (16, 1, 3, 3) and torch.equal(
        backbone.conv1_1.weight, first[kept]
    )
    second = state["features.2.weight"][:, kept]  # conv1_2 reads the 16 kept channels
    kept2 = torch.sort(torch.topk(second.abs().sum(dim=(1, 2, 3)), 16).indices).values
    assert torch.equal(backbone.conv1_2.weight, second[kept2])
    assert backbone.conv5_3.weight.shape == (128, 128, 3, 3)
    assert torch.equal(backbone.conv1_1.norm.weight, torch.ones(16))  # BN starts from its own init
    with pytest.raises(QuantMimicInputError, match="vgg16 only"):
        convert.check_target_config("resnet18", str(CONFIGS / "voc" / "teacher_R18_FPN.yaml"), select=True)


def toy_env(root: Path) -> dict:
    return dict(os.environ, DETECTRON2_DATASETS=str(root), PYTHONWARNINGS="ignore")


def run_demo(config: Path, image: Path, output: Path, root: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(DEMO),
        "--config-file",
        str(config),
        "--input",
        str(image),
        "--output",
        str(output),
    ]
    return subprocess.run(cmd, cwd=REPO, env=toy_env(root), capture_output=True, text=True, timeout=300)


def interrupt(run: Path, at: str) -> None:
    """Make ``run`` look like a run killed after checkpoint ``at``: no final checkpoint or export."""
    for name in ("model_final.pth", "student_final.pth"):
        (run / name).unlink(missing_ok=True)
    (run / "last_checkpoint").write_text(at)


@pytest.mark.slow
def test_wider_face_qm_stage_trains_resumes_evaluates_and_exports(toy_root, tmp_path):
    """The paper's WIDER FACE QM config (grayscale VGG-1-32 R-FCN with OHEM) through train_net.py on the
    toy data: teacher check (COCO AP through detectron2's conversion of the string-id val set), training,
    a resume, the official evaluation and the student export, which the demo runs."""
    teacher_cfg = CONFIGS / "wider_face" / "teacher_VGG4_RFCN_quant.yaml"
    torch.manual_seed(0)
    teacher = build_model(build_config(str(teacher_cfg), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]))
    DetectionCheckpointer(teacher, save_dir=str(tmp_path)).save("teacher")
    out = tmp_path / "qm"
    args = ["--config-file", str(CONFIGS / "wider_face" / "qm_VGG32_RFCN.yaml"),
            "MODEL.QUANT_MIMIC.TEACHER_WEIGHTS", str(tmp_path / "teacher.pth"),
            "MODEL.QUANT_MIMIC.TEACHER_MIN_AP", "0.0", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1",
            "INPUT.MIN_SIZE_TRAIN", "(160,)", "OUTPUT_DIR", str(out)]  # fmt: skip
    run = run_train_net(args, toy_root)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Teacher AP on the first 50 images of wider_face_val" in run.stdout + run.stderr
    assert (out / "teacher_check" / "wider_face_val_coco_format.json").is_file()
    interrupt(out, "model_0000001.pth")
    resumed = run_train_net(["--resume", *args], toy_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 2" in resumed.stdout + resumed.stderr
    final = read_metrics(out)[-1]
    assert set(final) >= {"wider_face/easy", "wider_face/medium", "wider_face/hard"}
    assert all(0.0 <= final[f"wider_face/{k}"] <= 100.0 for k in ("easy", "medium", "hard"))
    assert (out / "inference" / "wider_face_val" / "0--Parade" / "0_Parade_toy_val_0.txt").is_file()
    student_config = out / "student_config.yaml"
    assert (out / "student_final.pth").is_file() and build_config(str(student_config)).INPUT.FORMAT == "L"
    image = toy_root / "WIDER_FACE" / "WIDER_val" / "images" / "0--Parade" / "0_Parade_toy_val_0.jpg"
    demo = run_demo(student_config, image, tmp_path / "drawn.jpg", toy_root)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / "drawn.jpg").is_file()


@pytest.mark.slow
def test_voc_student_trains_on_07_plus_12_and_reports_ap50_per_class(toy_root, tmp_path):
    out = tmp_path / "scratch"
    args = ["--config-file", str(CONFIGS / "voc" / "student_R18_16_FPN_scratch.yaml"), *VOC.smoke_opts,
            "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)]  # fmt: skip
    run = run_train_net(args, toy_root)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert (
        "voc_2007_trainval" in log and "voc_2012_trainval" in log and "Per-class AP50 on voc_2007_test" in log
    )
    final = read_metrics(out)[-1]
    assert {"bbox/AP", "bbox/AP50", "bbox/AP75"} <= set(final)
    assert {f"bbox/AP50-{c}" for c in TOY_VOC_CLASSES} <= set(final)
    assert len([k for k in final if k.startswith("bbox/AP50-")]) == 20  # every VOC class (NaN: no object)


# ---------------------------------------------------------------------------------------------------------
# The whole main job per setting (opt-in)
# ---------------------------------------------------------------------------------------------------------


def run_pipeline(*argv: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "quant_mimic_tools.pipeline", *argv]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.skipif(not E2E, reason="opt-in (2-4 min): QUANTMIMIC_SETTINGS_E2E=1")
@pytest.mark.parametrize("name", ["voc", "wider_face"])
def test_main_job_runs_the_settings_chain_end_to_end(tmp_path, name):
    setting = CHAINS[name]
    out = tmp_path / name
    checkpoints = ["SOLVER.CHECKPOINT_PERIOD", "3"]
    run = run_pipeline("--setting", name, "--smoke", "--output-dir", str(out), *checkpoints)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    root = out / "toy_data"
    stages = chain_stages(out, [0], chain=setting, teacher_weights="")
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == [s.name for s in stages]
    for stage in stages:
        final = read_metrics(out / stage.name)[-1]
        assert {m.key for m in setting.metrics} <= set(final), stage.name
        assert (out / stage.name / "model_0000002.pth").is_file()
    val = "voc_2007_test" if setting is VOC else "wider_face_val"
    for stage in stages[3:]:  # mimic and QM: the teacher check ran on the val set
        assert f"Teacher AP on the first 50 images of {val}" in (out / f"{stage.name}.log").read_text()
        assert (out / stage.name / "teacher_check" / f"{val}_coco_format.json").is_file()
        assert (out / stage.name / "student_final.pth").is_file()
    table = (out / "results.md").read_text()
    assert all(f"paper {k}" in table for k in setting.paper_metrics)
    report = out / "report"
    for name_ in (
        "index.md",
        "model_zoo.md",
        "model_zoo.json",
        "predictions.png",
        "curves.png",
        "matching_ratio.png",
    ):
        assert (report / name_).is_file()
    zoo = json.loads((report / "model_zoo.json").read_text())
    assert set(zoo[0]) >= {m.label for m in setting.metrics} and zoo[4]["checkpoint"].endswith(
        "student_final.pth"
    )

    # an interrupted stage continues with --resume: the QM student, from iteration 3
    qm = stages[4]
    interrupt(out / qm.name, "model_0000002.pth")
    cmd = stage_command(qm, out, [*setting.smoke_opts, *checkpoints])
    assert "--resume" in cmd
    resumed = subprocess.run(cmd, cwd=REPO, env=toy_env(root), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 3" in resumed.stdout + resumed.stderr
    assert (out / qm.name / "student_final.pth").is_file()

    if setting is VOC:
        image = next((root / "VOC2007" / "JPEGImages").glob("*.jpg"))
    else:
        image = next((root / "WIDER_FACE" / "WIDER_val" / "images").rglob("*.jpg"))
    demo = run_demo(out / qm.name / "student_config.yaml", image, tmp_path / "drawn.jpg", root)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (tmp_path / "drawn.jpg").is_file()


def test_the_estimate_follows_the_configs_schedule_and_input_size():
    from quant_mimic.deploy.runtime import resized_shape
    from quant_mimic_tools.estimate import evaluations

    assert [evaluations(*a) for a in [(40000, 10000), (10000, 10000), (25000, 10000), (80000, 0)]] == [
        4,
        1,
        3,
        1,
    ]
    assert resized_shape(*VOC.typical_image[:2], 600, 1000) == (600, 800)  # VOC's short side 600
    assert (
        resized_shape(*WIDER_FACE.typical_image[:2], 0, 10000) == WIDER_FACE.typical_image[:2]
    )  # original size
