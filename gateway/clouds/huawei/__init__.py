"""Huawei Cloud ECS provider."""

from gateway.clouds.huawei.ecs import AKSKAuth, HuaweiECS
from gateway.clouds.huawei.iam import IAMTokenAuth
from gateway.clouds.huawei.signer import Credentials

__all__ = ["AKSKAuth", "Credentials", "HuaweiECS", "IAMTokenAuth"]
