"""The NVFlare Client API script of the bare-NVFlare and simulator runs.

It calls the same `fl_train_model` as Rondo's executor, with the same payload: the site's data
root is `<--data-root>/<site name>`.
"""

import argparse
import tempfile

import nvflare.client as flare
import torch
from model_def import fl_train_model
from nvflare.app_common.abstract.fl_model import FLModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--model", default="TinyNet")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    args = parser.parse_args()

    flare.init()
    site = flare.get_site_name()
    while flare.is_running():
        incoming = flare.receive()
        payload = {
            "dataset": {"data_root": f"{args.data_root}/{site}"},
            "env": {
                "SITE_NAME": site,
                "CURRENT_ROUND": incoming.current_round,
                "NUM_ROUNDS": incoming.total_rounds,
                "model": args.model,
                "local_epochs": args.local_epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
            },
            "initial_weights": {k: torch.as_tensor(v) for k, v in incoming.params.items()},
        }
        with tempfile.TemporaryDirectory() as out_dir:
            result = fl_train_model(payload, out_dir)
        flare.send(
            FLModel(
                params={k: v.numpy() for k, v in result["weights"].items()},
                metrics=result["metrics"],
                meta={"NUM_STEPS_CURRENT_ROUND": result["samples"]},
            )
        )


if __name__ == "__main__":
    main()
