"""Pod Security "restricted" (Kubernetes 1.33) as field checks on a pod spec, for the kinds scanners cannot read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline and restricted)
_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def _containers(pod: Manifest) -> Iterator[Manifest]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key, [])


def _pod_level(pod: Manifest) -> list[str]:
    errors = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _VOLUME_TYPES:
            errors.append(f"volume {volume['name']}: {sorted(kinds - _VOLUME_TYPES)} not allowed")
    if pod.get("securityContext", {}).get("runAsUser") == 0:
        errors.append("securityContext.runAsUser: 0")
    return errors


def _container_level(pod: Manifest, container: Manifest) -> list[str]:
    name, context = container.get("name", "?"), container.get("securityContext", {})
    pod_context = pod.get("securityContext", {})
    errors = []
    if context.get("privileged"):
        errors.append(f"{name}: privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{name}: allowPrivilegeEscalation must be false")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        errors.append(f"{name}: runAsNonRoot must be true (pod or container)")
    if context.get("runAsUser") == 0:
        errors.append(f"{name}: runAsUser 0")
    seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
    if seccomp.get("type") not in _SECCOMP_TYPES:
        errors.append(f"{name}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []):
        errors.append(f"{name}: capabilities.drop must include ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        errors.append(f"{name}: capabilities.add beyond NET_BIND_SERVICE")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        errors.append(f"{name}: hostPort")
    return errors


def restricted_violations(pod: Manifest) -> list[str]:
    """Why Pod Security admission at level "restricted" would reject POD (a pod spec); empty when it passes."""
    errors = _pod_level(pod)
    for container in _containers(pod):
        errors += _container_level(pod, container)
    return errors
