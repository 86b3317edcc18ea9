"""Real-etcd test harness: locate a binary, run members/clusters, provide session etcd."""

from .client import compact, current_revision, make_client, normalize_endpoint, parse_endpoint
from .cluster import EtcdCluster, member_status
from .data import etcd_items, etcd_revision, group_bytes, put_group, wait_until
from .locate import distro_binary, etcd_version, find_etcd_binary
from .ports import free_port, free_ports
from .provider import (
    ENDPOINTS_ENV,
    ETCD_IMAGE,
    EtcdSession,
    etcd_endpoints_for_session,
    planned_source,
)
from .proxy import TcpProxy
from .report import SUMMARY_KEY
from .server import EtcdMember, EtcdStartError

__all__ = [
    "ENDPOINTS_ENV",
    "ETCD_IMAGE",
    "SUMMARY_KEY",
    "EtcdCluster",
    "EtcdMember",
    "EtcdSession",
    "EtcdStartError",
    "TcpProxy",
    "compact",
    "current_revision",
    "distro_binary",
    "etcd_endpoints_for_session",
    "etcd_items",
    "etcd_revision",
    "etcd_version",
    "find_etcd_binary",
    "free_port",
    "free_ports",
    "group_bytes",
    "make_client",
    "member_status",
    "normalize_endpoint",
    "parse_endpoint",
    "planned_source",
    "put_group",
    "wait_until",
]
