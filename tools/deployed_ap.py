"""COCO box AP of a trained detector, eager against each way its deployed form runs on a device.

    python tools/deployed_ap.py --config-file projects/QuantMimic/configs/shapes/student_R18_16_FPN_scratch.yaml \
        --weights output/shapes/student_scratch_seed0/model_final.pth [--device cuda] [--json F]

On ``DATASETS.TEST[0]`` (the built-in val set unless overridden): detectron2's eager model, then the
deployed form (``quant_mimic.deploy``) with the exact NMS, and on CUDA also under CUDA graphs with the
static NMS, in float32 and float16. Prints one line per run with its AP, AP50 and the difference to the
eager AP (the deployed form's promise: within 0.3 AP). A check for a lent GPU (tools/device_check.sh);
on the CPU the test suite checks the same on the mini data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "projects" / "QuantMimic"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    import torch
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset
    from detectron2.modeling import build_model

    import quant_mimic  # noqa: F401  (registers the project's models and data sets)
    from quant_mimic.checkpoint import StudentCheckpointer
    from quant_mimic.config import build_config
    from quant_mimic.deploy import DeployedPredictor, export_deployed

    cfg = build_config(args.config_file, ["MODEL.DEVICE", args.device, *args.opts])
    torch.manual_seed(0)
    model = build_model(cfg)
    StudentCheckpointer(model).load(args.weights)
    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, dataset)
    runs = {"deployed": {}}
    if args.device.startswith("cuda"):
        runs["deployed_cuda_graphs"] = {"cuda_graphs": True}
        runs["deployed_cuda_graphs_fp16"] = {"cuda_graphs": True, "half": True}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:

        def ap(module) -> dict:
            evaluator = COCOEvaluator(dataset, output_dir=tempfile.mkdtemp(dir=tmp))
            return inference_on_dataset(module, loader, evaluator)["bbox"]

        results["eager"] = ap(model)
        folder = export_deployed(cfg, model, Path(tmp) / "deployed")
        for name, kwargs in runs.items():
            predictor = DeployedPredictor(folder, args.device, **kwargs)
            name = f"{name} ({predictor.backend})"
            results[name] = ap(predictor.as_module())
            results[name]["exact_reruns"] = predictor.exact_reruns
    eager = results["eager"]["AP"]
    print(f"{'run':<40}{'AP':>7}{'AP50':>7}{'AP - eager AP':>15}  ({dataset}, {args.device})")
    for name, m in results.items():
        print(f"{name:<40}{m['AP']:>7.2f}{m['AP50']:>7.2f}{m['AP'] - eager:>15.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
