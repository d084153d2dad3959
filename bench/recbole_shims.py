"""What RecBole 1.2.1 needs to run on today's numpy, scipy and torch (../shared/anchors/RECBOLE.md,
"RecBole behaviours", item 8); none of it changes a computation. Import this before recbole.
Also collects the seconds RecBole logs per training epoch into `epoch_times`, per validation
pass into `eval_times`, and the
valid_metric of each evaluation into `valid_scores`."""
import functools, logging, os, re, sys, types

import numpy as np

for name, value in [("float_", np.float64), ("int_", np.int64), ("bool8", np.bool_), ("unicode_", np.str_), ("complex_", np.complex128)]:
    if not hasattr(np, name):
        setattr(np, name, value)
tb = types.ModuleType("torch.utils.tensorboard")
tb.SummaryWriter = lambda *a, **k: types.SimpleNamespace(add_scalar=lambda *a, **k: None, close=lambda: None, add_hparams=lambda *a, **k: None)
sys.modules["torch.utils.tensorboard"] = tb
# ray is imported for hyper-parameter search only, which the bench scripts do not use
ray = types.ModuleType("ray")
ray.tune = types.ModuleType("ray.tune")
sys.modules["ray"], sys.modules["ray.tune"] = ray, ray.tune
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.load = functools.partial(torch.load, weights_only=False)
import scipy.sparse as sp  # noqa: E402

if not hasattr(sp.dok_matrix, "_update"):
    sp.dok_matrix._update = lambda self, data: [self.__setitem__(k, v) for k, v in data.items()]

epoch_times = []
# the seconds RecBole logs per validation pass (full ranking of every user)
eval_times = []
# the valid_metric after each evaluation, in order
valid_scores = []
# RecBole's epoch "train loss": the sum of its batch losses
train_losses = []
# the model's trainable parameter count, as RecBole logs it with the model
trainable_params = []


class _EpochTimes(logging.Handler):
    def emit(self, record):
        text = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        m = re.search(r"epoch \d+ training \[time: ([0-9.]+)s", text)
        if m:
            epoch_times.append(float(m.group(1)))
        m = re.search(r"Trainable parameters: ([0-9]+)", text)
        if m:
            trainable_params.append(int(m.group(1)))
        m = re.search(r"evaluating \[time: ([0-9.]+)s", text)
        if m:
            eval_times.append(float(m.group(1)))
        m = re.search(r"train loss: ([0-9.]+)", text)
        if m:
            train_losses.append(float(m.group(1)))
        m = re.search(r"valid_score: ([0-9.]+)", text)
        if m:
            valid_scores.append(float(m.group(1)))


logging.getLogger().addHandler(_EpochTimes())
logging.getLogger().setLevel(logging.INFO)
