"""One training step of simplepose-small (320x256, batch 8) on CPU: float32 vs bfloat16 autocast.

Run: python benchmarks/amp_step_bench.py (prints each mode twice, interleaved, to show the noise).
"""
import time

import torch
from rtpose.skeleton import COCO
from trainer.model import SimplePoseNet
torch.set_num_threads(2); torch.manual_seed(0)
model = SimplePoseNet(COCO).to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn(8, 3, 256, 320).to(memory_format=torch.channels_last)
for amp in (False, True, False, True):
    times = []
    for i in range(8):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            outs = model(x)
        loss = sum(o.float().square().mean() for o in outs)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t)
    print(f"amp={amp}: step {min(times[1:])*1000:.0f} ms (min of 7 after warm-up)", flush=True)
