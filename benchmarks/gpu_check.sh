#!/usr/bin/env bash
# GPU checks for one NVIDIA GPU: the three forms on CUDA, AMP training + validation through the CLI, DDP over
# NCCL (one rank: a single GPU cannot hold two NCCL ranks), and GPU inference timings. Prints everything;
# writes logs to $OUT (or runs/gpu_check). Needs torch with CUDA, opencv, pyyaml, tqdm, matplotlib, pycocotools.
# tests/test_gpu_check.py parses every spikeyolo / benchmarks command line here against the current argparse.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu_check}; mkdir -p "$OUT"; TMP=$(mktemp -d)
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== 1. forms on CUDA (float64): fused and spike-driven equal the train form; conv inputs binary"
python3 - <<'PY'
import torch, spikeyolo
torch.manual_seed(0)
m = spikeyolo.build_model("s", nc=3, width=0.25, T=2, D=4).double().cuda()
for b in m.modules():
    if isinstance(b, torch.nn.BatchNorm2d):
        b.running_mean.uniform_(-.5, .5); b.running_var.uniform_(.5, 2); b.weight.data.uniform_(.5, 1.5); b.bias.data.uniform_(-.5, .5)
m.eval(); x = torch.rand(2, 3, 128, 160, dtype=torch.float64, device="cuda") * 3
y = m(x); f = spikeyolo.fuse(m)(x); sd_model = spikeyolo.to_spike_driven(m); s = sd_model(x)
rel = lambda a: ((a - y).abs().max() / y.abs().max()).item()
audit = spikeyolo.audit(sd_model, x)
print(f"fused rel diff {rel(f):.1e}  spike-driven rel diff {rel(s):.1e}  binary convs {sum(r.binary for r in audit[1:])}/{len(audit) - 1}")
assert rel(f) < 1e-9 and rel(s) < 1e-9 and all(r.binary for r in audit[1:])
PY

echo "== 2. AMP training and validation on GPU 0 through the CLI"
python3 -c "from spikeyolo.demo.trees import prepare_tree_dataset; print(prepare_tree_dataset('$TMP/trees'))"
python3 -m spikeyolo train --data "$TMP/trees/data.yaml" --model n --width 0.25 --epochs 2 --imgsz 320 --batch 16 \
  --device 0 --workers 4 --project "$TMP/runs" --name amp --json 2>&1 | tee "$OUT/train_amp.log" | tail -4
python3 -m spikeyolo val --weights "$TMP/runs/amp/weights/best.pt" --data "$TMP/trees/data.yaml" --imgsz 320 \
  --device 0 --json 2>&1 | tee "$OUT/val.log" | tail -3
cp "$TMP/runs/amp/results.csv" "$OUT/" 2>/dev/null

echo "== 3. DDP over NCCL (one rank), loss and backward through DistributedDataParallel"
python3 - <<'PY'
import torch, torch.distributed as dist, spikeyolo
from torch.nn.parallel import DistributedDataParallel as DDP
from spikeyolo.engine.loss import DetectionLoss
dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
m = spikeyolo.build_model("n", nc=2, width=0.25).cuda().train()
ddp = DDP(m, device_ids=[0]); loss_fn = DetectionLoss(m)
batch = {"cls": torch.tensor([[0.], [1.]], device="cuda"), "bboxes": torch.tensor([[.5, .5, .2, .3], [.3, .6, .1, .1]], device="cuda"),
         "batch_idx": torch.tensor([0., 1.], device="cuda")}
with torch.autocast("cuda"):
    total, items = loss_fn(ddp(torch.rand(2, 3, 128, 128, device="cuda")), batch)
total.backward()
t = torch.ones(1, device="cuda"); dist.all_reduce(t)
print("nccl ok: loss", [round(v, 4) for v in items.tolist()], "all_reduce", t.item(), "grad finite",
      all(p.grad is None or torch.isfinite(p.grad).all().item() for p in m.parameters()))
dist.destroy_process_group()
PY

echo "== 4. GPU inference timings (batch 1, float32 input; torch forms, bf16 deploy included)"
python3 benchmarks/infer_gpu.py --device cuda --scales n s --sizes 640 --repeats 10 2>&1 | tee "$OUT/infer_gpu.txt"
rm -rf "$TMP"
