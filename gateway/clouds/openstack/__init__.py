"""OpenStack Nova provider (and Huawei-stack clouds on Nova-style paths, such as Open Telekom Cloud)."""

from gateway.clouds.openstack.nova import NovaCompute

__all__ = ["NovaCompute"]
