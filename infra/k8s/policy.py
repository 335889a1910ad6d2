#!/usr/bin/env python3
"""Checks rendered manifests for what the API schemas cannot see.

Usage: policy.py RENDERED.yaml...   (infra/k8s-check.sh passes target/k8s/*.yaml)

For every Deployment:
  - pod: runAsNonRoot, seccomp RuntimeDefault, no service account token;
  - every container (init containers too): readOnlyRootFilesystem, no
    privilege escalation, capabilities drop ALL, CPU and memory requests and
    limits that parse, requests no larger than limits;
  - the main container: liveness on /healthz and readiness on /readyz, on a
    port it declares; a graceful termination period covering the drain
    (CALLFLOW_DRAIN_TIMEOUT of its ConfigMaps), its preStop pause and 5 s;
  - a Service, a PodDisruptionBudget and a NetworkPolicy that select it, a
    ServiceAccount that exists; no `replicas` when an autoscaler owns it;
  - every ConfigMap it names exists; Secrets it names exist or are listed as
    the ones to create (none may be in a rendering named overlay-prod).
Every Service selects pods and its target ports exist; every autoscaler
targets a Deployment. Prints the Secrets (and keys) each rendering expects.
"""

import re
import sys

import yaml

DRAIN_DEFAULT = "20s"  # kit::config::Common::drain_timeout
MARGIN = 5  # seconds beyond drain + preStop


def quantity(text, kind):
    """CPU in millicores or memory in bytes; raises ValueError when unreadable."""
    text = str(text)
    if kind == "cpu":
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", text)
        if not m:
            raise ValueError(text)
        return float(m.group(1)) * (1 if m.group(2) else 1000)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", text)
    if not m:
        raise ValueError(text)
    unit = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * unit


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def selects(selector, labels):
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def check(path):
    errors = []
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    names = {k: {d["metadata"]["name"]: d for d in v} for k, v in by_kind.items()}
    configmaps = names.get("ConfigMap", {})
    secrets = names.get("Secret", {})
    wanted_secrets = {}  # name -> set of keys
    prod = "prod" in path.rsplit("/", 1)[-1]

    if prod and secrets:
        errors.append(f"production carries Secrets: {sorted(secrets)} (create them out of band)")

    def err(obj, text):
        errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {text}")

    def want_secret(obj, name, key, optional):
        if name in secrets:
            if key is not None and key not in (secrets[name].get("data") or {}) and not optional:
                err(obj, f"Secret {name} has no key {key}")
        else:
            keys = wanted_secrets.setdefault(name, set())
            if key is not None:
                keys.add(key + (" (optional)" if optional else ""))

    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in names.get("Deployment", {}):
            err(hpa, f"targets {ref['kind']}/{ref['name']}, which is not here")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            err(hpa, "minReplicas > maxReplicas")

    for dep in by_kind.get("Deployment", []):
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        if not selects(spec["selector"], labels):
            err(dep, "its selector does not select its own pods")
        if dep["metadata"]["name"] in hpa_targets and "replicas" in spec:
            err(dep, "has replicas although an autoscaler owns the count")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            err(dep, "pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            err(dep, "pod seccompProfile is not RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            err(dep, "automountServiceAccountToken is not false")
        sa_name = pod.get("serviceAccountName")
        sa = names.get("ServiceAccount", {}).get(sa_name)
        if sa is None:
            err(dep, f"ServiceAccount {sa_name!r} is not here")
        elif sa.get("automountServiceAccountToken") is not False:
            err(sa, "automountServiceAccountToken is not false")

        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                err(dep, f"volume {volume['name']}: ConfigMap {volume['configMap']['name']} is not here")
            if "secret" in volume:
                secret = volume["secret"]
                for key in [item["key"] for item in secret.get("items") or []] or [None]:
                    want_secret(dep, secret["secretName"], key, secret.get("optional", False))

        drain = DRAIN_DEFAULT
        containers = pod.get("initContainers", []) + pod["containers"]
        for c in containers:
            where = f"container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                err(dep, f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(dep, f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                err(dep, f"{where}: capabilities do not drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                err(dep, f"{where}: adds capabilities")
            res = c.get("resources", {})
            for kind in ("cpu", "memory"):
                try:
                    req = quantity(res["requests"][kind], kind)
                    lim = quantity(res["limits"][kind], kind)
                except KeyError:
                    err(dep, f"{where}: no {kind} request or limit")
                    continue
                except ValueError as e:
                    err(dep, f"{where}: unreadable {kind} quantity {e}")
                    continue
                if req > lim:
                    err(dep, f"{where}: {kind} request above its limit")
            env_names = [e["name"] for e in c.get("env", [])]
            if len(env_names) != len(set(env_names)):
                err(dep, f"{where}: an environment variable is set twice")
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    cm = configmaps.get(src["configMapRef"]["name"])
                    if cm is None:
                        err(dep, f"{where}: ConfigMap {src['configMapRef']['name']} is not here")
                    elif c in pod["containers"]:
                        drain = (cm.get("data") or {}).get("CALLFLOW_DRAIN_TIMEOUT", drain)
                if "secretRef" in src:
                    want_secret(dep, src["secretRef"]["name"], None, src["secretRef"].get("optional", False))
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    want_secret(dep, r["name"], r["key"], r.get("optional", False))
                if "configMapKeyRef" in ref and ref["configMapKeyRef"]["name"] not in configmaps:
                    err(dep, f"{where}: ConfigMap {ref['configMapKeyRef']['name']} is not here")

        main = pod["containers"][0]
        ports = {p.get("name") for p in main.get("ports", [])} | {p["containerPort"] for p in main.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (main.get(probe) or {}).get("httpGet")
            if not get or get.get("path") != path:
                err(dep, f"{probe} is not an HTTP GET of {path}")
            elif get.get("port") not in ports:
                err(dep, f"{probe} probes port {get.get('port')}, which the container does not declare")
        pre_stop = (((main.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        try:
            needed = seconds(drain) + pre_stop + MARGIN
        except ValueError:
            err(dep, f"unreadable CALLFLOW_DRAIN_TIMEOUT {drain!r}")
            needed = 0
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace < needed:
            err(dep, f"terminationGracePeriodSeconds {grace} < drain {drain} + preStop {pre_stop}s + {MARGIN}s")

        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            found = False
            for obj in by_kind.get(kind, []):
                sel = obj["spec"].get("selector") if kind != "NetworkPolicy" else obj["spec"]["podSelector"]
                if sel is None:
                    continue
                if kind == "Service":
                    sel = {"matchLabels": sel}
                if kind == "NetworkPolicy" and not (sel.get("matchLabels") or sel.get("matchExpressions")):
                    continue
                if selects(sel, labels) and (kind != "NetworkPolicy" or "app.kubernetes.io/name" in str(sel)):
                    found = True
            if not found:
                err(dep, f"no {kind} of its own selects its pods")

    deployments = by_kind.get("Deployment", [])
    for svc in by_kind.get("Service", []):
        sel = svc["spec"].get("selector") or {}
        targets = [d for d in deployments if selects({"matchLabels": sel}, d["spec"]["template"]["metadata"].get("labels", {}))]
        if not targets:
            err(svc, "selects no Deployment's pods")
            continue
        container_ports = set()
        for d in targets:
            for c in d["spec"]["template"]["spec"]["containers"]:
                for p in c.get("ports", []):
                    container_ports |= {p.get("name"), p["containerPort"]}
        for p in svc["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in container_ports:
                err(svc, f"target port {p.get('targetPort')} is no container port")

    images = {c["image"] for d in deployments for c in d["spec"]["template"]["spec"].get("initContainers", []) + d["spec"]["template"]["spec"]["containers"]}
    if len(images) != 1:
        errors.append(f"the Deployments run {len(images)} images ({sorted(images)}); callflow ships one")
    elif prod and (":" not in next(iter(images)).rsplit("/", 1)[-1] and "@" not in next(iter(images))
                   or next(iter(images)).endswith(":latest")):
        errors.append(f"production's image {next(iter(images))} has no fixed tag or digest")

    return docs, errors, wanted_secrets


def main(paths):
    failed = False
    for path in paths:
        docs, errors, wanted = check(path)
        name = path.rsplit("/", 1)[-1]
        if errors:
            failed = True
            for e in errors:
                print(f"{name}: {e}", file=sys.stderr)
        else:
            print(f"{name}: {len(docs)} objects pass")
        if wanted:
            print(f"{name}: Secrets to create beforehand:")
            for secret in sorted(wanted):
                keys = ", ".join(sorted(wanted[secret])) or "(whole Secret)"
                print(f"  {secret}: {keys}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
