"""The benchmark's training job, following Rondo's training contract (`fl_train_model`).

Every way the benchmark runs the job (through Rondo, bare NVFlare, the simulator) calls this
same function. Each call prints one timing line (`TIMING_MARK round=.. site=.. train_s=..`)
that the benchmark reads back from the client logs: the local training time of that round.

`TinyNet` (~2.7k parameters) shows the platform's fixed per-round cost; `LargeNet`
(~25.2M parameters, ~101 MB of float32 weights) shows the cost of moving the weights.
The shard's `data.pt` holds `x` (N, 32) and `y` (N,) with 10 classes; `sleep.txt`, when
present, makes every round after round 0 last that many seconds longer (a straggler).
"""

import time
from pathlib import Path

import torch
from torch import nn

TIMING_MARK = "RONDO_BENCH_TIMING"
IN_FEATURES = 32
NUM_CLASSES = 10


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(IN_FEATURES, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LargeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(IN_FEATURES, 5000),
            nn.ReLU(),
            nn.Linear(5000, 5000),
            nn.ReLU(),
            nn.Linear(5000, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


MODELS = {"TinyNet": TinyNet, "LargeNet": LargeNet}


def fl_train_model(payload, out_dir, logger=None):
    started = time.perf_counter()
    env = payload["env"]
    data_root = Path(payload["dataset"]["data_root"])
    model = MODELS[env.get("model", "TinyNet")]()
    if payload["initial_weights"]:
        model.load_state_dict(payload["initial_weights"])
    data = torch.load(data_root / "data.pt", weights_only=True)
    x, y = data["x"], data["y"]
    optimizer = torch.optim.SGD(model.parameters(), lr=float(env["learning_rate"]))
    batch_size = int(env["batch_size"])
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(int(env["local_epochs"])):
        for start in range(0, len(x), batch_size):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(
                model(x[start : start + batch_size]), y[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
    straggler = data_root / "sleep.txt"
    if straggler.is_file() and env["CURRENT_ROUND"] > 0:
        time.sleep(float(straggler.read_text()))
    train_s = time.perf_counter() - started
    print(
        f"{TIMING_MARK} round={env['CURRENT_ROUND']} site={env['SITE_NAME']} train_s={train_s:.4f}",
        flush=True,
    )
    return {"weights": model.state_dict(), "samples": len(x), "metrics": {"loss": loss.item()}}
