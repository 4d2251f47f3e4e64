"""Jobs and their executions (seed 000 "Jobs", Blaxel Jobs/*): see service.py."""

from cove.services.jobs.service import DeployJob, JobService, NewExecution

__all__ = ["DeployJob", "JobService", "NewExecution"]
