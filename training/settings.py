"""Settings of the training worker (``FDL_`` environment variables), read once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from fdl.queue import DEFAULT_VISIBILITY_TIMEOUT_S
from fdl.settings import CommonSettings

# Batches run per call into the compiled training graph. Fewer Python round trips per batch make
# small networks train much faster on CPU; callbacks (progress, the cancellation check) then run
# once per call, so a cancellation takes effect within this many batches.
DEFAULT_STEPS_PER_EXECUTION = 16


class WorkerSettings(CommonSettings):
    # Redis redelivers an unacknowledged message only after this; longer than the longest job.
    visibility_timeout_s: int = Field(default=DEFAULT_VISIBILITY_TIMEOUT_S, ge=60)
    # A running job's record is touched this often by a thread of the worker process.
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    # A running job whose heartbeat is older than this is considered lost (its worker died).
    stale_after_s: float = Field(default=120.0, gt=0)
    # How often each worker looks for lost jobs (it also looks once at start-up).
    reaper_interval_s: float = Field(default=30.0, gt=0)
    # While Redis is unreachable (a restart), the worker retries each job-record operation this
    # long before giving the job up to the reaper; training pauses meanwhile instead of failing.
    redis_retry_s: float = Field(default=120.0, ge=0)
    # A job still queued this long after its message was sent has it sent again by a reaper (a
    # message lost between the gateway's record and the broker, or inside the broker); a
    # duplicate of a job already taken or ended is skipped by the worker that receives it.
    resend_queued_after_s: float = Field(default=600.0, gt=0)
    # A job that ended this long ago loses its record and events (a reaper removes them), so
    # Redis does not grow with every job ever run; 0 keeps them forever.
    job_retention_s: float = Field(default=30 * 86400.0, ge=0)
    # A job is run at most this many times; a job lost more often ends failed.
    max_attempts: int = Field(default=3, ge=1, le=20)
    # A run of a job that goes on longer than this ends failed and publishes nothing (the job's
    # spec may ask for less: max_duration_s); checked between calls into the training graph and
    # between the job's stages, so a runaway job never holds its worker for good.
    max_job_duration_s: float = Field(default=24 * 3600.0, gt=0)
    # A run still going this long after its time was up (stuck where nothing checks: reading
    # data, a call that never returns) has its process killed (Celery's hard time limit).
    job_kill_grace_s: float = Field(default=600.0, gt=0)
    # A job whose training finished waits for the model repository's lock (another writer may
    # hold it for long: a hung promotion, slow storage) in rounds of this long, for as long as
    # it may run; between rounds it checks its cancellation and time limit and says it waits.
    publish_lock_wait_s: float = Field(default=120.0, ge=1)
    # Download missing datasets (MNIST, CIFAR-10) when the network allows.
    download: bool = True
    download_timeout_s: float = Field(default=60.0, gt=0)
    # Mixed precision: float16 compute on GPUs; bfloat16 on CPUs with native bfloat16, for the
    # recipes that ask for it (training.recipes.Recipe.cpu_bfloat16).  Weights stay float32.
    mixed_precision: bool = True
    # Batches per call into the compiled training graph (cancellation acts within this many).
    steps_per_execution: int = Field(default=DEFAULT_STEPS_PER_EXECUTION, ge=1, le=256)


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
