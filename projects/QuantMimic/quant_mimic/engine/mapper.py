"""A dataset mapper that names the image it could not read."""

from __future__ import annotations

from typing import Any, Callable, Dict

from ..errors import QuantMimicInputError


class ImageErrorNamingMapper:
    """Wraps a detectron2 mapper (e.g. ``DatasetMapper``): an ``OSError`` while mapping a dataset dict
    (a missing, truncated or otherwise unreadable image, which PIL reports without its file name) is
    re-raised as :class:`QuantMimicInputError` naming the file and its image id.

    It runs in DataLoader worker processes too; ``quant_mimic.errors.one_line`` recovers the sentence
    from PyTorch's re-raised worker error.
    """

    def __init__(self, mapper: Callable[[Dict[str, Any]], Any]):
        self.mapper = mapper

    def __call__(self, dataset_dict: Dict[str, Any]) -> Any:
        try:
            return self.mapper(dataset_dict)
        except OSError as e:
            file_name = dataset_dict.get("file_name", "?")
            image_id = dataset_dict.get("image_id", "?")
            reason = " ".join(str(e.strerror if isinstance(e, FileNotFoundError) else e).split())
            raise QuantMimicInputError(
                f"The image {file_name} (image_id {image_id}) cannot be read ({reason}): replace the file with "
                "an intact copy or remove the image from the data set."
            ) from None
