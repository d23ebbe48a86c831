"""QuantMimic's commands, kept apart from the library ``quant_mimic`` (as detectron2 keeps tools/ apart
from detectron2/). Each runs as ``python -m quant_mimic_tools.<command>``:

    pipeline       the main job: teachers -> students (built-in data, VOC or WIDER FACE), results table and
                   report; ``--estimate``: each stage's step and test-image time here, and the chain's hours
    study          students over seeds to convergence, the paper's ablations, paired differences with 95% CIs
    benchmark      cost: training steps of scratch vs mimic/QM, and teacher vs student inference, eager and deployed
    peers          torchvision's tiny detectors trained on the same data, their record and the AP-latency picture
    deploy         the deployed form of a trained detector (folded, traced / ONNX networks, batched inference)
    evaluate_deployed  COCO AP of a trained detector, eager vs each way its deployed form runs; ``--sweep``:
                   AP and deployed latency over a grid of test-time settings
    convert        torchvision ImageNet checkpoints -> weights of this project's backbones
    feature_stats  what a quantizer stride does to a trained model's features
    collect_env    versions, where detectron2 came from, missing compiled ops
    wider_face_eval  the official WIDER FACE evaluation of per-image prediction files: Easy / Medium / Hard AP
    voc_eval       Pascal VOC AP50 of every class beside the mean, from the devkit's per-class result files

Also here: ``chains`` (the main job's chains: configs, data sets, metrics, the paper's numbers),
``runner`` (a chain's stages as train_net.py runs, reused or resumed: the pipeline's and the study's),
``report`` (the main job's model-zoo table, pictures and index page) and ``results`` (the
run readers and table formatting that the pipeline and the report share). ``quant_mimic`` never
imports this package.
"""

import warnings

# torch's deprecation notices about what detectron2 calls at import (torch.jit.script): noise in every
# command's --help and around its one-line errors, which the user cannot act on (as train_net.py filters)
warnings.filterwarnings("ignore", message=r".*(deprecat|in an upcoming release)", category=FutureWarning)
