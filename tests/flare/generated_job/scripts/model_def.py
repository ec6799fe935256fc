"""A tiny job for the federation tests, following the training contract.

Each site's data root holds `value.txt` (a number) and a few CSV files (one sample a line).
Training returns every parameter filled with the site's value, so the samples-weighted global
model is known exactly; `seen` reports the mean of the weights the site received.
`extra.sleep_s` makes each round last that long; with `extra.hold_file`, training from round
`extra.hold_from_round` on waits while that file exists (a test holds a job mid-round).
"""

import time
from pathlib import Path

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_features: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def fl_train_model(payload, out_dir, logger=None):
    data_root = Path(payload["dataset"]["data_root"])
    samples = sum(len(f.read_text().splitlines()) for f in sorted(data_root.glob("*.csv")))
    value = float((data_root / "value.txt").read_text())
    initial = payload["initial_weights"]
    seen = torch.cat([v.flatten().float() for v in initial.values()]).mean().item()
    env = payload["env"]
    (Path(out_dir) / "note.txt").write_text(f"{env['SITE_NAME']} round {env['CURRENT_ROUND']}")
    if logger:
        logger(f"training round {env['CURRENT_ROUND']} of {env['NUM_ROUNDS']}")
        logger({"site": env["SITE_NAME"], "lr": env["learning_rate"], "tag": env.get("tag")})
    time.sleep(float(env.get("sleep_s", 0)))
    hold = env.get("hold_file")
    if hold and env["CURRENT_ROUND"] >= int(env.get("hold_from_round", 0)):
        while Path(hold).exists():
            time.sleep(0.05)
    weights = {k: torch.full_like(v, value) for k, v in TinyNet().state_dict().items()}
    return {"state_dict": weights, "num_samples": samples, "metrics": {"loss": value, "seen": seen}}
