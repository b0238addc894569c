#!/usr/bin/env python3
"""The reference the simulator is measured against: a single-process PyTorch SplitFed loop.

The same U-Net as split/unet.h (3x3 conv-BN-ReLU blocks, 2x2 max-pool, 2x2 transposed-conv
up-steps, 1x1 head), cut like `--split deep`, SFLV1 (one body copy per site), Adam at every
part, soft Dice + cross-entropy, FedAvg by image count at the end of each round, and, like
`splitfed sim`, each site's validation pass and a test-set evaluation of the global model
every round. Everything runs in one Python process with no network: the shape of the
single-script code that papers in this field publish.

Benchmark only: the product never runs Python. Needs Debian's python3-torch.

  python3 bench/pytorch_splitfed.py --sites 3 --images-per-site 48 --rounds 5 --threads 2
"""
import argparse
import copy
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Front(nn.Module):  # enc0 + pool0: keeps the level-0 skip at the site
    def __init__(self, cin, f):
        super().__init__()
        self.enc0 = block(cin, f)

    def forward(self, x):
        e0 = self.enc0(x)
        return F.max_pool2d(e0, 2), e0


class Body(nn.Module):  # enc1..bottleneck..dec1, on the coordinator
    def __init__(self, f, depth):
        super().__init__()
        ch = [f * 2 ** i for i in range(depth + 1)]
        self.enc = nn.ModuleList([block(ch[i - 1], ch[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2)
                                 for i in range(depth - 1, 0, -1)])
        self.dec = nn.ModuleList([block(2 * ch[i], ch[i]) for i in range(depth - 1, 0, -1)])
        self.depth = depth

    def forward(self, a1):
        skips, x = [], a1
        for i, enc in enumerate(self.enc):
            x = enc(x)
            if i < self.depth - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return x


class Back(nn.Module):  # up0 + concat skip + dec0 + head
    def __init__(self, f, classes):
        super().__init__()
        self.up0 = nn.ConvTranspose2d(2 * f, f, 2, stride=2)
        self.dec0 = block(2 * f, f)
        self.head = nn.Conv2d(f, classes, 1)

    def forward(self, a2, e0):
        return self.head(self.dec0(torch.cat([e0, self.up0(a2)], 1)))


def loss_fn(logits, masks, classes):
    p = logits.softmax(1)
    t = F.one_hot(masks, classes).permute(0, 3, 1, 2).float()
    inter = (p * t).sum((0, 2, 3))
    dice = 1 - ((2 * inter + 1e-5) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + 1e-5)).mean()
    return dice + F.cross_entropy(logits, masks)


def average(states, weights):
    out = {}
    for k in states[0]:
        if states[0][k].dtype.is_floating_point:
            out[k] = sum(w * s[k].double() for s, w in zip(states, weights)).to(states[0][k].dtype)
        else:
            out[k] = max(s[k] for s in states)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--images-per-site", type=int, default=48)
    ap.add_argument("--validation-fraction", type=float, default=0.2)
    ap.add_argument("--test-images", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--base-width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)

    # Content does not change the cost: standardised noise images and random label maps.
    def data(n):
        return torch.randn(n, 1, a.size, a.size), torch.randint(0, a.classes, (n, a.size, a.size))
    n_val = max(1, int(a.images_per_site * a.validation_fraction))
    sites = [data(a.images_per_site) for _ in range(a.sites)]
    test = data(a.test_images)
    front, body, back = Front(1, a.base_width), Body(a.base_width, a.depth), Back(a.base_width, a.classes)

    def evaluate(fr, bo, ba, images):
        for m in (fr, bo, ba):
            m.eval()
        with torch.no_grad():
            for i in range(0, len(images), 16):
                a1, e0 = fr(images[i:i + 16])
                ba(bo(a1), e0).argmax(1)
        for m in (fr, bo, ba):
            m.train()

    trained = 0
    start = time.perf_counter()
    for rnd in range(a.rounds):
        parts = []
        for images, masks in sites:
            fr, bo, ba = copy.deepcopy(front), copy.deepcopy(body), copy.deepcopy(back)
            site_opt = torch.optim.Adam(list(fr.parameters()) + list(ba.parameters()), lr=a.lr)
            body_opt = torch.optim.Adam(bo.parameters(), lr=a.lr)
            train_x, train_y = images[:-n_val], masks[:-n_val]
            for epoch in range(a.local_epochs):
                order = torch.randperm(len(train_x))
                for i in range(0, len(order) - 1, a.batch_size):  # a batch of one is dropped
                    idx = order[i:i + a.batch_size]
                    if len(idx) < 2:
                        continue
                    x, y = train_x[idx], train_y[idx]
                    # Site: front; the cut is a detach, as if a1 crossed the network.
                    a1, e0 = fr(x)
                    a1_server = a1.detach().requires_grad_()
                    a2 = bo(a1_server)  # coordinator
                    a2_site = a2.detach().requires_grad_()
                    loss = loss_fn(ba(a2_site, e0), y, a.classes)  # site
                    site_opt.zero_grad()
                    body_opt.zero_grad()
                    loss.backward(retain_graph=True)  # g2 at a2_site; grads of back, skip path
                    a2.backward(a2_site.grad)  # coordinator: g1 at a1_server
                    body_opt.step()
                    a1.backward(a1_server.grad)  # site: front's gradient from g1
                    site_opt.step()
                    trained += len(idx)
            evaluate(fr, bo, ba, images[-n_val:])  # the site's validation pass
            parts.append((fr.state_dict(), bo.state_dict(), ba.state_dict(), len(train_x)))
        total = sum(p[3] for p in parts)
        w = [p[3] / total for p in parts]
        front.load_state_dict(average([p[0] for p in parts], w))
        body.load_state_dict(average([p[1] for p in parts], w))
        back.load_state_dict(average([p[2] for p in parts], w))
        evaluate(front, body, back, test[0])  # the global model on the test set
    seconds = time.perf_counter() - start
    result = {
        "implementation": "python/pytorch single process", "torch": torch.__version__,
        "threads": a.threads, "sites": a.sites, "rounds": a.rounds, "local_epochs": a.local_epochs,
        "images_trained": trained, "seconds": seconds, "images_per_second": trained / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
