"""The names of the metrics the trainer reports: the contract other packages import.

`trainer.loop.train` and `trainer.fused.train_fused` send a dict with these keys to `report` at
every eval point (docs/CONTRACTS.md, "Metric keys"); the orchestrator logs them, analysis reads
them back. A key is named here once and everything that writes or reads it imports the name, so
renaming one is an edit of this file. No imports: the orchestrator and analysis can use it
without loading torch.
"""

# every report
STEP = "step"
TOKENS = "tokens"                    # tokens trained on so far (step × tokens per step)
TRAIN_LOSS = "train_loss"            # mean train loss of the steps since the last report
VAL_LOSS = "val_loss"                # NaN in the report of the step a run diverged at
LR = "lr"                            # the base LR of the last step
GRAD_NORM = "grad_norm"              # before clipping
MULT_GRAD_NORM = "mult_grad_norm"    # the learnable multipliers' gradients (not clipped)
TOKENS_PER_S = "tokens_per_s"
FLOPS = "flops"                      # training FLOPs so far
MFU = "mfu"                          # only when the device's peak FLOP/s is known
ELAPSED_S = "elapsed_s"              # wall time of the run so far, over resumed segments

REPORT_KEYS = (STEP, TOKENS, TRAIN_LOSS, VAL_LOSS, LR, GRAD_NORM, MULT_GRAD_NORM, TOKENS_PER_S, FLOPS, MFU,
               ELAPSED_S)

# per-layer keys of every report: a prefix, then the layer or norm name (docs/CONTRACTS.md)
WEIGHT_RMS = "weight_rms/"           # weight_rms/<layer>: stored matrix RMS
EFF_RMS = "eff_rms/"                 # eff_rms/<layer>: effective (multiplier × matrix) RMS
MULT = "mult/"                       # mult/<layer>/scalar, mult/<layer>/row_mean ... col_max
NORM = "norm/"                       # norm/<name>/mean: RMSNorm weight mean
ACT = "act/"                         # act/<name>: mean |activation| (the coordinate check)

LAYER_PREFIXES = (WEIGHT_RMS, EFF_RMS, MULT, NORM, ACT)

# the final report (and TrainResult.metrics) adds these
FINAL = "final"                      # True in the last report only
STATUS = "status"                    # FINISHED or DIVERGED
FINAL_TRAIN_LOSS = "final_train_loss"
FINAL_VAL_LOSS = "final_val_loss"
MIN_VAL_LOSS = "min_val_loss"        # over every report's val_loss
N_PARAMS = "n_params"
N_PARAMS_NONEMBEDDING = "n_params_nonembedding"
WALL_TIME_S = "wall_time_s"
DIVERGED_AT_STEP = "diverged_at_step"  # only when the run diverged

FINAL_KEYS = (FINAL, STATUS, FINAL_TRAIN_LOSS, FINAL_VAL_LOSS, MIN_VAL_LOSS, N_PARAMS, N_PARAMS_NONEMBEDDING,
              WALL_TIME_S, DIVERGED_AT_STEP)

# the values of STATUS
FINISHED = "finished"
DIVERGED = "diverged"
STATUSES = (FINISHED, DIVERGED)
