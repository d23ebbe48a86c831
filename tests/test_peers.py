"""torchvision's peers (quant_mimic/peers.py, python -m quant_mimic_tools.peers, benchmark --peers, the
accuracy-latency picture) on the mini data set: the data they are fed, a 2-iteration training, its resume,
the refusals, the benchmark's peer rows and the picture."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from conftest import PROJECT, registered_mini_shapes
from detectron2.structures import BoxMode

from quant_mimic.errors import QuantMimicInputError
from quant_mimic.peers import (
    PEERS,
    batch_keys,
    hflip,
    iou_crop,
    learning_rate,
    to_instances,
    to_target,
    warmup_iters,
)
from quant_mimic_tools import benchmark, peers

SSD = "ssdlite320_mobilenet_v3_large"
FRCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"


# ---- what the peers are fed


def test_targets_are_xyxy_pixels_with_labels_shifted_past_the_background():
    record = {
        "file_name": "a.png",
        "annotations": [
            {"bbox": [10, 20, 30, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
            {"bbox": [5, 6, 7, 8], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            {"bbox": [0, 0, 50, 50], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "iscrowd": 1},
            {"bbox": [3, 3, 0, 9], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 4},  # no width
        ],
    }
    target = to_target(record, num_classes=5)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[10, 20, 40, 60], [5, 6, 7, 8]]
    assert target["labels"].tolist() == [3, 1]  # category 0..K-1 -> 1..K; 0 is torchvision's background
    empty = to_target({"annotations": []}, 5)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    with pytest.raises(QuantMimicInputError, match="category_id 5 is not one of the data set's 5 classes"):
        to_target(
            {"annotations": [{"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 5}]}, 5
        )
    output = {
        "boxes": torch.tensor([[1.0, 2, 3, 4]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([3]),
    }
    instances = to_instances(output, (32, 48))
    assert instances.image_size == (32, 48) and instances.pred_classes.tolist() == [2]
    assert instances.pred_boxes.tensor.tolist() == [[1, 2, 3, 4]] and instances.scores.tolist() == [
        pytest.approx(0.9)
    ]


def test_flip_and_iou_crop_move_the_boxes_with_the_pixels():
    image = torch.zeros(3, 40, 60)
    image[:, 10:20, 5:15] = 1  # the box's pixels
    target = {"boxes": torch.tensor([[5.0, 10, 15, 20]]), "labels": torch.tensor([2])}
    flips = [hflip(image, target, np.random.default_rng(s)) for s in range(8)]
    flipped = [(im, t) for im, t in flips if not torch.equal(im, image)]
    assert flipped and len(flipped) < 8  # half of the time
    im, t = flipped[0]
    assert t["boxes"].tolist() == [[45, 10, 55, 20]] and im[0, 10:20, 45:55].all() and im[0].sum() == 100
    for seed in range(20):
        im, t = iou_crop(image, target, np.random.default_rng(seed))
        h, w = im.shape[-2:]
        assert len(t["boxes"]) == len(t["labels"]) == 1 and 0 < h <= 40 and 0 < w <= 60
        x0, y0, x1, y1 = t["boxes"][0].round().int().tolist()
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and im[0, y0:y1, x0:x1].all()  # the box is still on it
        assert im[0].sum() == (x1 - x0) * (y1 - y0)
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    assert iou_crop(image, none, np.random.default_rng(0))[0] is image


def test_schedule_data_order_and_learning_rate():
    assert batch_keys(10, 4, 0, 3) == batch_keys(10, 4, 0, 3) != batch_keys(10, 4, 1, 3)
    epoch = [i for it in range(5) for i, _ in batch_keys(10, 2, 0, it)]
    assert sorted(epoch) == list(range(10))  # one epoch: every image once
    assert warmup_iters(800, 8) == 99 and warmup_iters(64, 64) == 0 and warmup_iters(10**6, 8) == 1000
    ssd, frcnn = PEERS[SSD], PEERS[FRCNN]
    assert learning_rate(ssd, 0.1, 0, 100, 10) == pytest.approx(1e-4)  # warm-up from 1/1000
    assert learning_rate(ssd, 0.1, 50, 100, 10) == pytest.approx(0.05)  # cosine, half way
    assert learning_rate(frcnn, 0.1, 60, 100, 0) == pytest.approx(0.1)
    assert learning_rate(frcnn, 0.1, 62, 100, 0) == pytest.approx(0.01)  # 16/26 of 100 -> 62
    assert learning_rate(frcnn, 0.1, 85, 100, 0) == pytest.approx(0.001)  # 22/26 -> 85


# ---- training


@pytest.fixture(scope="module")
def mini(datasets_root):
    with registered_mini_shapes(datasets_root, "peers_mini") as names:
        yield names


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def args_for(output, *extra) -> list[str]:
    return ["--train", "peers_mini_train", "--val", "peers_mini_val", "--models", SSD, "--seeds", "0",
            "--batch", "2", "--max-iter", "2", "--eval-period", "0", "--checkpoint-period", "1",
            "--threads", "1", "--output-dir", str(output), *extra]  # fmt: skip


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(mini, tmp_path_factory):
    output = tmp_path_factory.mktemp("peers")
    peers.main(args_for(output))
    return output


def test_two_iterations_write_a_checkpoint_metrics_with_ap_and_the_record(trained):
    folder = trained / f"{SSD}_seed0"
    final = torch.load(folder / "model_final.pth", weights_only=False)
    assert final["iteration"] == 2 and final["peer"]["classes"][0] == "circle" and final["model"]
    assert (folder / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(folder.glob("model_0*.pth"))  # the periodic checkpoints go once the final one is there
    rows = read_metrics(folder)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [1, 2]
    assert rows[0]["lr"] < rows[1]["lr"]  # warm-up
    assert rows[-1]["iteration"] == 2 and 0 <= rows[-1]["bbox/AP"] <= 100
    settings = json.loads((folder / "peer.json").read_text())
    assert settings["images"] == 4 and settings["augment"] == ["iou_crop", "hflip"]
    assert settings["students_schedule"] == [8, 500] and settings["students_config"].endswith("scratch.yaml")
    record = json.loads((trained / "peers.json").read_text())
    entry = record["models"][SSD]
    assert entry["runs"]["0"]["AP"] == pytest.approx(rows[-1]["bbox/AP"], abs=1e-3)
    assert entry["mean"] == entry["runs"]["0"]["AP"] and entry["std"] is None
    assert set(record["source"]) == {"command", "machine", "date", "note"}


def test_the_default_schedule_sees_as_many_images_as_the_students(mini, tmp_path):
    args = peers.get_parser().parse_args(["--train", "peers_mini_train", "--val", "peers_mini_val",
                                          "--output-dir", str(tmp_path)])  # fmt: skip
    runs = peers.plan(args)
    assert {r.settings["model"] for r in runs} == set(PEERS) and {r.settings["seed"] for r in runs} == {0, 1}
    for r in runs:
        assert r.settings["batch"] * r.settings["max_iter"] == 8 * 500 and r.settings["eval_period"] == 125
    lrs = {r.settings["model"]: r.settings["lr"] for r in runs}
    assert lrs == {SSD: pytest.approx(0.15 / 192 * 8), FRCNN: pytest.approx(0.02 / 16 * 8)}


def test_resume_continues_from_the_last_checkpoint_as_if_never_stopped(
    trained, tmp_path, monkeypatch, capsys
):
    step, calls = peers.train_step, []

    def stopped_at_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(peers, "train_step", stopped_at_the_second)
    with pytest.raises(SystemExit) as exit_:
        peers.main(args_for(tmp_path))
    assert exit_.value.code == 130
    folder = tmp_path / f"{SSD}_seed0"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"peers: {SSD}_seed0: interrupted at iteration 2; --resume continues from {folder}/model_0000001.pth."
    ]
    assert (folder / "last_checkpoint").read_text() == "model_0000001.pth"
    assert [r["iteration"] for r in read_metrics(folder)] == [1] and not (folder / "model_final.pth").exists()
    with pytest.raises(SystemExit) as exit_:  # an unfinished run is not started again over itself
        peers.main(args_for(tmp_path))
    assert exit_.value.code == 2
    monkeypatch.setattr(peers, "train_step", step)
    peers.main(args_for(tmp_path, "--resume"))
    assert [r["iteration"] for r in read_metrics(folder)] == [1, 2, 2]
    resumed = torch.load(folder / "model_final.pth", weights_only=False)["model"]
    whole = torch.load(trained / f"{SSD}_seed0" / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)  # the same images, augmentations and RNG


def test_a_finished_run_is_not_overwritten(trained, capsys):
    final = trained / f"{SSD}_seed0" / "model_final.pth"
    before = final.stat().st_mtime_ns, final.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        peers.main(args_for(trained))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("peers: error: ") and "holds a finished run: pass --resume" in err
    peers.main(args_for(trained, "--resume"))
    assert "finished already, left as it is" in capsys.readouterr().out
    assert (final.stat().st_mtime_ns, final.read_bytes()) == before


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--train", "no_such_set"], "--train no_such_set is not a registered data set: use a built-in name"),
        (["--max-iter", "0"], "--batch 2 and --max-iter 0: both must be at least 1."),
    ],
)
def test_bad_input_is_one_sentence(mini, tmp_path, capsys, extra, says):
    with pytest.raises(SystemExit) as exit_:
        peers.main(args_for(tmp_path) + extra)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and says in err, err
    assert not list(tmp_path.iterdir())


# ---- the benchmark's peer rows and the picture


@pytest.fixture(scope="module")
def timed(mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark") / "peers.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        benchmark.main(["--skip-train", "--skip-paper-row", "--peers", "--sizes", "96", "--repeats", "2",
                        "--infer-rounds", "2", "--warmup", "0", "--threads", "1", "--json", str(out)])  # fmt: skip
    return printed.getvalue(), json.loads(out.read_text())


def test_benchmark_times_the_peers_in_the_same_rounds_as_ours(timed):
    stdout, results = timed
    row = results["infer"]["shapes"]["96"]
    printed = {
        tuple(line.split()[1:3]): line.split()
        for line in stdout.splitlines()
        if line.startswith("       96  ")
    }
    for name in PEERS:  # the rows as printed: run, computes at, M params, GFLOPs, total ms
        eager, ort = printed[name, "eager"], printed[name, "onnxruntime"]
        assert eager[3] == "320x320" and float(eager[4]) == pytest.approx(
            row["peers"][name]["eager"]["params"] / 1e6, abs=0.006
        )
        assert float(ort[3]) == pytest.approx(
            row["peers"][name]["onnxruntime"]["latency_ms"]["total"], abs=0.06
        )
    assert set(row["peers"]) == set(PEERS)
    for name, kinds in row["peers"].items():
        assert set(kinds) == {"eager", "onnxruntime"}
        eager = kinds["eager"]
        assert eager["params"] > 1e6 and eager["gflops"] > eager["backbone_gflops"] > 0
        assert eager["computes_at"] == [320, 320] and eager["input_size"] == [96, 96]  # both resize to 320
        for kind, run in kinds.items():
            assert run["latency_ms"]["total"] > 0 and len(run["round_totals_ms"]) == 2, (name, kind)
            assert run["weights"] == "random"
        parts = sum(v for k, v in eager["latency_ms"].items() if k != "total")
        assert 0 < eager["latency_ms"]["backbone"] and parts <= eager["latency_ms"]["total"] * 1.05
        assert row["peer_ratios"][name]["deployed_peer/deployed_student"] > 0
    assert len(row["student"]["eager"]["round_totals_ms"]) == 2  # ours in the same rounds
    assert row["peers"][FRCNN]["eager"]["params"] > row["peers"][SSD]["eager"]["params"]


def test_benchmark_peer_weights_must_hold_every_peer(trained, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(["--skip-train", "--peers", "--peer-weights", str(trained)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and f"has no {FRCNN}_seed<N>/model_final.pth" in err[-1]


def test_the_picture_puts_the_peers_beside_our_models(trained, timed, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(timed[1]))
    png = tmp_path / "ap_latency.png"
    peers.main(args_for(trained, "--report-only", "--benchmark", str(bench), "--figure", str(png),
                        "--json", str(tmp_path / "record.json")))  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    record = json.loads((tmp_path / "record.json").read_text())
    models = record["latency"]["96"]["models"]
    assert set(models) == {"teacher", "student", SSD, FRCNN}
    assert models[SSD]["deployed_run"] == "onnxruntime" and models[SSD]["deployed_ms"] > 0

    from quant_mimic_tools.report.frontier import points

    found, where = points(PROJECT / "docs" / "records", record, size="96")
    assert where == "one benchmark run for every model"
    by_role = {(p.role, p.label): p for p in found}
    assert by_role["peer", "SSDlite320 MobileNetV3-L"].latency_ms == models[SSD]["deployed_ms"]
    students = [p for p in found if p.role == "student"]
    assert students and all(p.latency_ms == models["student"]["deployed_ms"] for p in students)
    assert any(p.seeds > 1 and p.std is not None for p in students)  # the study's spread over seeds
