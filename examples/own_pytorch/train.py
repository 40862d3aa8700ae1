"""A plain PyTorch training loop, swept by rungflow: `rungflow sweep examples/own_pytorch/sweep.yaml`.

Nothing here knows about rungflow except the return value: train for `budget` epochs in all,
continuing from `checkpoint` when the trial was promoted from a lower rung.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import rungflow


def load_data():
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    as_tensors = lambda a, b: (torch.tensor(a, dtype=torch.float32), torch.tensor(b))  # noqa: E731
    return as_tensors(x_train, y_train), as_tensors(x_val, y_val)


def build(config):
    return torch.nn.Sequential(
        torch.nn.Linear(64, config["hidden"]), torch.nn.ReLU(), torch.nn.Dropout(config["dropout"]),
        torch.nn.Linear(config["hidden"], 10),
    )


def train(config, budget, checkpoint):
    device = rungflow.trial_device()  # "cuda" when this trial holds a GPU share, else "cpu"
    torch.manual_seed(0)
    (x, y), (x_val, y_val) = load_data()
    model, first_epoch = build(config).to(device), 0
    optimiser = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    if checkpoint is not None:  # promoted: continue where the last rung stopped
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        first_epoch = checkpoint["epoch"]
    for epoch in range(first_epoch, int(budget)):
        model.train()
        for batch in torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).split(64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch].to(device)), y[batch].to(device))
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val.to(device)).argmax(1).cpu() == y_val).float().mean().item()
    return rungflow.Report(
        score=accuracy,
        checkpoint={"model": model.state_dict(), "optimiser": optimiser.state_dict(), "epoch": int(budget)},
        metrics={"epochs_this_call": int(budget) - first_epoch, "loss": loss.item() if int(budget) > first_epoch else 0.0},
    )
