"""Settings of the training worker (``FDL_`` environment variables), read once per process."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator

from fdl.queue import DEFAULT_VISIBILITY_TIMEOUT_S
from fdl.settings import (
    REDIS_URL_UNSET,
    SETTINGS_ERRORS,
    CommonSettings,
    prepare_model_dir,
    prepare_var_dir,
    settings_problem,
)

# Batches run per call into the compiled training graph. Fewer Python round trips per batch make
# small networks train much faster on CPU; callbacks (progress, the cancellation check) then run
# once per call, so a cancellation takes effect within this many batches.
DEFAULT_STEPS_PER_EXECUTION = 16

# Upper bounds of the durations below, so that each is a finite number of seconds that every
# wait accepts (threading's waits raise OverflowError past about 292 years, killing the thread
# that waits: the reaper's, a heartbeat's), and no typo makes a job or record last for ages.
DAY_S = 86400.0
MONTH_S = 30 * DAY_S
# A running job is lost after FDL_STALE_AFTER_S without a heartbeat: its worker must have beaten
# several times in that long, or a healthy run is taken for lost (a slow beat, a Redis hiccup).
STALE_AFTER_HEARTBEATS = 3
# The longest broker visibility timeout: a year, far past the longest run a worker allows
# (FDL_MAX_JOB_DURATION_S + FDL_JOB_KILL_GRACE_S, at most 31 days). kombu computes with it as a
# float: a longer one either never redelivers or, past about 1e308, stops the worker at start
# (OverflowError).
MAX_VISIBILITY_TIMEOUT_S = 365 * 86400
# The peak resident size (MiB) of a pool process past which it is replaced after its job: well
# above a CIFAR-10 job's on CPU (measured: 1.5 GiB cifar10_cnn, 1.9 GiB cifar10_airnet, the
# whole training set; 1.4 GiB for a 1,000-image one), below the Kubernetes manifest's 12 GiB
# limit (deploy/k8s/base/worker.yaml).
DEFAULT_MAX_MEMORY_PER_CHILD_MB = 6144
# The hand-backs of a job not counted as attempts (FDL_MAX_HAND_BACKS): far more routine stops
# (rollouts, restarts) than one job meets, far fewer than a loop of them costs.
DEFAULT_MAX_HAND_BACKS = 10
# The checkpoints' folder in FDL_VAR_DIR unless FDL_CHECKPOINT_DIR names one.
CHECKPOINTS_FOLDER = "checkpoints"


class WorkerSettings(CommonSettings):
    # Redis redelivers an unacknowledged message only after this; meant to be longer than the
    # longest job (a message redelivered while its job runs is skipped).
    visibility_timeout_s: int = Field(
        default=DEFAULT_VISIBILITY_TIMEOUT_S, ge=60, le=MAX_VISIBILITY_TIMEOUT_S
    )
    # A running job's record is touched this often by a thread of the worker process.
    heartbeat_interval_s: float = Field(default=10.0, gt=0, le=DAY_S, allow_inf_nan=False)
    # A running job whose heartbeat is older than this is considered lost (its worker died).
    stale_after_s: float = Field(default=120.0, gt=0, le=MONTH_S, allow_inf_nan=False)
    # How often each worker looks for lost jobs (it also looks once at start-up).
    reaper_interval_s: float = Field(default=30.0, gt=0, le=DAY_S, allow_inf_nan=False)
    # While Redis is unreachable (a restart), the worker retries each job-record operation this
    # long before giving the job up to the reaper; training pauses meanwhile instead of failing.
    redis_retry_s: float = Field(default=120.0, ge=0, le=DAY_S, allow_inf_nan=False)
    # A job still queued this long after its message was sent has it sent again by a reaper (a
    # message lost between the gateway's record and the broker, or inside the broker); a
    # duplicate of a job already taken or ended is skipped by the worker that receives it.
    resend_queued_after_s: float = Field(default=600.0, gt=0, le=MONTH_S, allow_inf_nan=False)
    # A job that ended this long ago loses its record and events (a reaper removes them), so
    # Redis does not grow with every job ever run; 0 keeps them forever.
    job_retention_s: float = Field(default=MONTH_S, ge=0, le=365 * DAY_S, allow_inf_nan=False)
    # A job is run at most this many times; a job lost more often ends failed.
    max_attempts: int = Field(default=3, ge=1, le=20)
    # A job handed back by stopping workers (training/worker_stop.py) more often than this has
    # each further hand-back counted as an attempt (toward max_attempts), as a lost run is: a
    # job that itself gets its worker stopped does not go round for ever.
    max_hand_backs: int = Field(default=DEFAULT_MAX_HAND_BACKS, ge=0, le=1000)
    # A run of a job that goes on longer than this ends failed and publishes nothing (the job's
    # spec may ask for less: max_duration_s); checked between calls into the training graph and
    # between the job's stages, so a runaway job never holds its worker for good.
    max_job_duration_s: float = Field(default=DAY_S, gt=0, le=MONTH_S, allow_inf_nan=False)
    # A run still going this long after its time was up (stuck where nothing checks: reading
    # data, a call that never returns) has its process killed (Celery's hard time limit).
    job_kill_grace_s: float = Field(default=600.0, gt=0, le=DAY_S, allow_inf_nan=False)
    # A job whose training finished waits for the model repository's lock (another writer may
    # hold it for long: a hung promotion, slow storage) in rounds of this long, for as long as
    # it may run; between rounds it checks its cancellation and time limit and says it waits.
    publish_lock_wait_s: float = Field(default=120.0, ge=1, le=DAY_S, allow_inf_nan=False)
    # Download missing datasets (MNIST, CIFAR-10) when the network allows.
    download: bool = True
    download_timeout_s: float = Field(default=60.0, gt=0, le=DAY_S, allow_inf_nan=False)
    # Mixed precision: float16 compute on GPUs; bfloat16 on CPUs with native bfloat16, for the
    # recipes that ask for it (training.recipes.Recipe.cpu_bfloat16).  Weights stay float32.
    mixed_precision: bool = True
    # Batches per call into the compiled training graph (cancellation acts within this many).
    steps_per_execution: int = Field(default=DEFAULT_STEPS_PER_EXECUTION, ge=1, le=256)
    # The pool process that runs the jobs is replaced by a fresh one after a job that took its
    # peak resident size past this many MiB (Celery's worker_max_memory_per_child; 0: never),
    # and after this many jobs (worker_max_tasks_per_child; 0: never): memory that TensorFlow
    # keeps after each job is given back before the kernel's out-of-memory killer ends a run.
    max_memory_per_child_mb: int = Field(default=DEFAULT_MAX_MEMORY_PER_CHILD_MB, ge=0, le=2**20)
    max_jobs_per_child: int = Field(default=0, ge=0, le=1_000_000)
    # A checkpoint of each job after each epoch (training/checkpoints.py), from which a run
    # handed back or lost resumes; in FDL_CHECKPOINT_DIR (default <FDL_VAR_DIR>/checkpoints),
    # storage that every worker shares where there are several.
    checkpoints: bool = True
    checkpoint_dir: Path | None = None

    @model_validator(mode="after")
    def _checkpoint_dir_apart(self) -> WorkerSettings:
        """The reaper removes the checkpoints of jobs it has no record of: a checkpoint folder
        that is, or holds, the var folder, the data or the model repository (``.``, the working
        folder) would be searched for them, and one inside the model repository would sit among
        the models."""
        if self.checkpoint_dir is None:
            return self
        root = Path(os.path.realpath(self.checkpoint_dir))
        for setting, folder in (
            ("FDL_VAR_DIR", self.var_dir),
            ("FDL_DATA_DIR", self.data_dir),
            ("FDL_MODEL_DIR", self.model_dir),
        ):
            other = Path(os.path.realpath(folder))
            if other == root or root in other.parents:
                raise ValueError(
                    f"FDL_CHECKPOINT_DIR must be a folder of its own: it is or holds {setting}"
                )
            if setting == "FDL_MODEL_DIR" and other in root.parents:
                raise ValueError(
                    "FDL_CHECKPOINT_DIR must not be inside FDL_MODEL_DIR, among the models"
                )
        return self

    @property
    def checkpoint_root(self) -> Path:
        """Where the jobs' checkpoints are (``<root>/<job id>/``): FDL_CHECKPOINT_DIR, else
        ``<FDL_VAR_DIR>/checkpoints``."""
        return self.checkpoint_dir or self.var_dir / CHECKPOINTS_FOLDER

    @model_validator(mode="after")
    def _stale_after_several_heartbeats(self) -> WorkerSettings:
        if self.stale_after_s < STALE_AFTER_HEARTBEATS * self.heartbeat_interval_s:
            raise ValueError(
                f"FDL_STALE_AFTER_S must be at least {STALE_AFTER_HEARTBEATS} times "
                "FDL_HEARTBEAT_INTERVAL_S: a running job without a heartbeat for "
                "FDL_STALE_AFTER_S is taken for lost and run again while its worker still "
                "trains it"
            )
        return self


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()


def settings_or_exit() -> WorkerSettings:
    """The worker's settings; invalid ones stop the process with one line on stderr
    (``fdl-worker: FDL_NAME: reason``, ``; ``-separated) and exit status 1, never quoting a
    value. So does an FDL_MODEL_DIR the gateway would refuse (a file; a set one whose parent is
    missing, a volume not mounted: the worker's versions went to the disk underneath, which the
    gateway and the model server never see); the default, var/models, is made where missing.
    So does an FDL_VAR_DIR that cannot be made or written (under a file, read-only): its
    TensorBoard logs and dataset cache go there; it is made where missing. So does, with
    FDL_CHECKPOINTS on, an FDL_CHECKPOINT_DIR that cannot be made or written."""
    try:
        settings = get_settings()
    except SETTINGS_ERRORS as error:
        sys.exit(f"fdl-worker: {settings_problem(error)}")
    if not settings.redis_url:
        sys.exit(f"fdl-worker: {REDIS_URL_UNSET}")
    explicit = "model_dir" in settings.model_fields_set
    if problem := prepare_model_dir(settings.model_dir, explicit) or prepare_var_dir(
        settings.var_dir
    ):
        sys.exit(f"fdl-worker: {problem}")
    if settings.checkpoints and (
        problem := prepare_var_dir(settings.checkpoint_root, "FDL_CHECKPOINT_DIR")
    ):
        sys.exit(f"fdl-worker: {problem}")
    return settings
