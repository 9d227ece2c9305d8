"""The PyTorch CPU recipe `pipeline`'s ResNet is measured against, trained on the split and
preprocessing `pipeline export` wrote (so both sides see the same numbers).

usage: torch_recipe.py EXPORT.arrow --seed S [--threads 2] [--epochs 40] [--lr 0.1]
                       [--pool max] [--residual 1,3] [--smoothing 0.1] [--out result.json]

The recipe: a small BN ResNet (3x3 conv → BatchNorm → ReLU units; widths 16-32-64-128, a
max-pool after each stage but the stem, residual blocks after the stages `--residual` lists
(default 1 and 3; 0 is the stem), a global pool and
one Linear layer), SGD with Nesterov momentum 0.9 and weight decay 5e-4 under OneCycleLR (its
defaults: cosine, 30% warm-up, momentum cycling 0.85-0.95) peaking at `--lr`, label smoothing
`--smoothing`, reflect-padded random crops (4 px) and horizontal flips, batches of 64, `--epochs` epochs.
As `pipeline train` does, each epoch is scored on `val` with flip test-time augmentation (the
mean of the image's and its mirror image's probabilities) and the weights of the best epoch
are kept; `test` is scored once, at the end, the same way.

The last line printed is `RESULT {json}`: seed, train seconds (the epochs and their val
scoring, not the imports or loading), best epoch, val and test accuracy, and the path of
every test row with whether it was classified correctly (to pair with `pipeline`'s).
"""
import argparse
import copy
import json
import time

import numpy as np
import pyarrow.ipc as ipc
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(path):
    t = ipc.open_file(path).read_all()
    h, w, c = json.loads(t.schema.metadata[b"pipeline.shape"])
    x = t.column("pixels").combine_chunks().values.to_numpy(zero_copy_only=False)
    x = x.astype(np.float32).reshape(-1, h, w, c).transpose(0, 3, 1, 2).copy()
    y = np.asarray(t.column("label").to_pylist(), dtype=np.int64)
    part = np.asarray(t.column("partition").to_pylist())
    paths = t.column("path").to_pylist()
    return torch.from_numpy(x), torch.from_numpy(y), part, paths


def conv_bn(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.f = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x):
        return x + self.f(x)


def resnet(c_in, classes, widths=(16, 32, 64, 128), residual=(1, 3), pool="max"):
    layers = [conv_bn(c_in, widths[0])]
    if 0 in residual:
        layers.append(Residual(widths[0]))
    for i in range(1, len(widths)):
        layers += [conv_bn(widths[i - 1], widths[i]), nn.MaxPool2d(2)]
        if i in residual:
            layers.append(Residual(widths[i]))
    head = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
    layers += [head, nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


def augment(xb, g, pad=4):
    n, _, h, w = xb.shape
    flip = torch.rand(n, generator=g) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    padded = F.pad(xb, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def predict(model, x, batch=256):
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        p = F.softmax(model(xb), 1) + F.softmax(model(xb.flip(3)), 1)
        out.append(p / 2)
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--pool", default="max", choices=["max", "avg"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--residual", default="1,3", help="stages followed by a residual block, e.g. 3")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    x, y, part, paths = load(a.export)
    tr, va, te = (np.flatnonzero(part == p) for p in ("train", "val", "test"))
    classes = int(y.max()) + 1
    residual = tuple(int(r) for r in a.residual.split(",") if r.strip())
    model = resnet(x.shape[1], classes, residual=residual, pool=a.pool)
    steps = (len(tr) + a.batch - 1) // a.batch
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=a.smoothing)
    xtr, ytr, xva, yva = x[tr], y[tr], x[va], y[va]
    best = (-1.0, None, 0)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(tr), generator=g)
        for s in range(steps):
            idx = order[s * a.batch : (s + 1) * a.batch]
            xb = augment(xtr[idx], g)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), ytr[idx]).backward()
            opt.step()
            sched.step()
        acc = (predict(model, xva).argmax(1) == yva).float().mean().item()
        if acc > best[0]:
            best = (acc, copy.deepcopy(model.state_dict()), epoch + 1)
    seconds = time.perf_counter() - start
    model.load_state_dict(best[1])
    correct = (predict(model, x[te]).argmax(1) == y[te]).tolist()
    result = {
        "seed": a.seed,
        "train_seconds": seconds,
        "best_epoch": best[2],
        "val_accuracy": best[0],
        "test_accuracy": sum(correct) / len(correct),
        "test": {paths[i]: bool(c) for i, c in zip(te, correct)},
    }
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f)
    print("RESULT " + json.dumps({k: v for k, v in result.items() if k != "test"}))


if __name__ == "__main__":
    main()
