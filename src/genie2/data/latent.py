"""The latent-actions folder `genie2 label` writes beside a dataset's episodes, as the data stage reads it.

DATA/latent-actions/NAME/labels.json                what labelled them: the LAM (path, weights hash), K
DATA/latent-actions/NAME/episode-000000.safetensors actions (t 1 int64): the latent action leading into
                                                    frame t (-1 at t = 0), as an episode holds its actions
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from genie2.data.episode import DatasetInfo
from genie2.errors import InputError

LABELS_DIR, LABELS_FILE, LABELS_FORMAT = "latent-actions", "labels.json", 1


def read_labels_info(labels: str | Path) -> dict:
    """A labels folder's labels.json, or a clear error where it has none."""
    path = Path(labels) / LABELS_FILE
    if not path.is_file():
        raise InputError(f"{labels} holds no latent actions ({LABELS_FILE} missing): run `genie2 label` first")
    return json.loads(path.read_text())


def latent_names(count: int) -> list[str]:
    """The names of K latent actions: "latent 1" ... "latent K" (keys 1..K on the play page)."""
    return [f"latent {i + 1}" for i in range(count)]


def with_latent_actions(info: DatasetInfo, labels: str | Path) -> DatasetInfo:
    """A dataset's info as its latent actions make it: K actions, one a step, named `latent_names`, its
    source recording what labelled them."""
    found = read_labels_info(labels)
    count, source = found["num_latent_actions"], {**info.source, "latent_actions": found}
    return replace(info, num_actions=count, action_names=latent_names(count), max_num_actions=1, source=source)
