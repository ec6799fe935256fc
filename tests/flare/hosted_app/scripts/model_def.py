"""The hosted SDK's style of model_def: a model class and `fl_train` on a pre-built model.

The site's shard holds `value.txt` and CSV files (one sample a line); training fills every
parameter with the value, so the samples-weighted global model is known exactly.
"""

from pathlib import Path

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_features: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def fl_train(model, env, out_dir, logger=None):
    data_root = Path(env["data_root"])
    value = float((data_root / "value.txt").read_text())
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(value)
    samples = sum(len(f.read_text().splitlines()) for f in sorted(data_root.glob("*.csv")))
    return {"samples": samples, "metrics": {"loss": value}}
