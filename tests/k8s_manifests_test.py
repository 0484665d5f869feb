#!/usr/bin/python3
"""Offline structural checks of recserve's Kubernetes manifests (deploy/k8s).

    /usr/bin/python3 tests/k8s_manifests_test.py deploy/k8s [-v]

Only Debian's python3-yaml and python3-kubernetes are used; no cluster is needed.

* Every YAML file parses; every object has apiVersion, kind and metadata.name.
* kustomization.yaml files: resources and patches exist, every YAML file in a
  kustomization's directory is used, patches target objects of the resources, images
  name images the containers use.
* Schema: built-in kinds are walked against the OpenAPI models of the Kubernetes Python
  client (openapi_types / attribute_map): unknown fields (typos), wrong scalar types,
  missing required fields, a few enums. Fields newer than the client's API (1.22) are
  allowed explicitly below and checked by hand. The PodMonitor CRD is checked by hand.
* Each kustomization is rendered offline (resources, namespace, images, strategic merge
  patches) and the result is checked for consistency: selectors match pod labels,
  Service target ports, probe ports and the PodMonitor port are container ports, the
  HPA targets an existing Deployment, referenced volumes, claims, ConfigMaps and
  ServiceAccounts exist, recserve's flags are real flags, and the termination grace
  period outlasts --drain_delay + --shutdown_grace.
* If kubectl is on PATH, `kubectl kustomize` renders each kustomization as well; its
  output gets the same checks and must equal the offline rendering.
* Self-tests break copies of the manifests on purpose and expect the problem reported.
"""

import copy
import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml
import kubernetes.client as k8s

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# Set by main() from the command line; the default is this repo's deploy/k8s.
MANIFEST_DIR = os.path.join(REPO, "deploy", "k8s")

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# ---------------------------------------------------------------------------------------
# Loading


def yaml_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith((".yaml", ".yml")):
                out.append(os.path.join(dirpath, f))
    return out


def load_docs(path):
    """All non-empty documents of a YAML file (raises yaml.YAMLError)."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def obj_id(obj):
    meta = obj.get("metadata") or {}
    return "%s/%s" % (obj.get("kind", "?"), meta.get("name", "?"))


def is_kustomization(doc):
    return isinstance(doc, dict) and doc.get("kind") in ("Kustomization", "Component") and str(
        doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def check_identity(obj, where):
    """apiVersion, kind, metadata.name present and strings."""
    problems = []
    if not isinstance(obj, dict):
        return ["%s: document is a %s, not a mapping" % (where, type(obj).__name__)]
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj.get(key):
            problems.append("%s: missing or non-string %s" % (where, key))
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        problems.append("%s: missing metadata.name" % where)
    return problems


# ---------------------------------------------------------------------------------------
# Schema from the Kubernetes client's OpenAPI models

# apiVersion/kind -> model class. Explicit, so a kind under the wrong group (e.g. a
# Deployment in "v1") is an error rather than a lucky name match.
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v1", "HorizontalPodAutoscaler"): "V1HorizontalPodAutoscaler",
    # autoscaling/v2 went GA in Kubernetes 1.23, after the client's API (1.22), whose
    # autoscaling/v2beta2 models have the same schema: v2 is v2beta2 promoted unchanged.
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("networking.k8s.io/v1", "Ingress"): "V1Ingress",
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def check_grpc_action(value, path, patch):
    """Probe.grpc (V1GRPCAction): {port: int32 (required), service: string}. Added in
    Kubernetes 1.24 (GA 1.27), after the client's API, so it has no model there."""
    if not isinstance(value, dict):
        return ["%s: expected a mapping (GRPCAction), got %s" % (path, type(value).__name__)]
    problems = []
    for k in value:
        if k not in ("port", "service"):
            problems.append("%s.%s: unknown field%s" % (path, k, suggest(k, ("port", "service"))))
    port = value.get("port")
    if port is None:
        if not patch:
            problems.append("%s.port: required field missing" % path)
    elif not is_int(port):
        problems.append("%s.port: expected an integer (a gRPC probe cannot use a port name), got %r"
                        % (path, port))
    elif not 1 <= port <= 65535:
        problems.append("%s.port: %d out of range" % (path, port))
    if "service" in value and not isinstance(value["service"], str):
        problems.append("%s.service: expected a string, got %r" % (path, value["service"]))
    return problems


# Fields newer than the client's API (Kubernetes 1.22) that these manifests use: each is
# checked by hand. (model class, JSON field) -> checker(value, path, patch) -> problems.
EXTRA_FIELDS = {
    ("V1Probe", "grpc"): check_grpc_action,
}

# Resource quantities are strings in the models, but the API server also takes JSON
# numbers for them (cpu: 2).
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
}

# A few enums (the client's models do not check values).
ENUMS = {
    ("V1Container", "imagePullPolicy"): {"Always", "IfNotPresent", "Never"},
    ("V1ContainerPort", "protocol"): {"TCP", "UDP", "SCTP"},
    ("V1ServicePort", "protocol"): {"TCP", "UDP", "SCTP"},
    ("V1ServiceSpec", "type"): {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    ("V1TopologySpreadConstraint", "whenUnsatisfiable"): {"DoNotSchedule", "ScheduleAnyway"},
    ("V1DeploymentStrategy", "type"): {"RollingUpdate", "Recreate"},
    ("V1PersistentVolumeClaimSpec", "accessModes"):
        {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"},
    ("V1SeccompProfile", "type"): {"RuntimeDefault", "Localhost", "Unconfined"},
    ("V2beta2MetricSpec", "type"): {"Resource", "Pods", "Object", "External", "ContainerResource"},
    ("V2beta2MetricTarget", "type"): {"Utilization", "Value", "AverageValue"},
    ("V2beta2HPAScalingPolicy", "type"): {"Pods", "Percent"},
    ("V2beta2HPAScalingRules", "selectPolicy"): {"Max", "Min", "Disabled"},
}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def suggest(word, choices):
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return " (did you mean %s?)" % close[0] if close else ""


@functools.lru_cache(maxsize=None)
def model_fields(cls_name):
    """JSON field -> (python attribute, type string) of a model class."""
    cls = getattr(k8s, cls_name)
    return {cls.attribute_map[attr]: (attr, t) for attr, t in cls.openapi_types.items()}


@functools.lru_cache(maxsize=None)
def required_fields(cls_name):
    """JSON names of the fields whose generated setter refuses None (client-side
    validation raises ValueError on a missing required field)."""
    cls = getattr(k8s, cls_name)
    inst = cls.__new__(cls)
    inst.local_vars_configuration = k8s.Configuration()
    inst.local_vars_configuration.client_side_validation = True
    required = set()
    for attr in cls.openapi_types:
        try:
            setattr(inst, attr, None)
        except ValueError:
            required.add(cls.attribute_map[attr])
    return frozenset(required)


def check_type(value, type_str, path, patch, owner=None):
    """Walk value against a client type string: 'str', 'int', 'list[V1Container]',
    'dict(str, str)', 'V1PodSpec', ... owner = (class, field) it belongs to."""
    if value is None:
        # In a strategic merge patch null deletes the key; in an object it is a mistake
        # (an empty "key:" in YAML).
        return [] if patch else ["%s: null value" % path]
    m = re.fullmatch(r"list\[(.+)\]", type_str)
    if m:
        if not isinstance(value, list):
            return ["%s: expected a list, got %s" % (path, type(value).__name__)]
        problems = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and patch and item.get("$patch") == "delete":
                continue
            problems += check_type(item, m.group(1), "%s[%d]" % (path, i), patch, owner)
        return problems
    m = re.fullmatch(r"dict\(str, (.+)\)", type_str)
    if m:
        if not isinstance(value, dict):
            return ["%s: expected a mapping, got %s" % (path, type(value).__name__)]
        problems = []
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append("%s: key %r is not a string" % (path, k))
            if owner in QUANTITY_FIELDS and (is_int(v) or isinstance(v, float)):
                continue
            problems += check_type(v, m.group(1), "%s.%s" % (path, k), patch, owner)
        return problems
    if type_str == "str":
        if owner in QUANTITY_FIELDS and (is_int(value) or isinstance(value, float)):
            return []
        if not isinstance(value, str):
            return ["%s: expected a string, got %r (%s); quote it" % (path, value, type(value).__name__)]
        if owner in ENUMS and value not in ENUMS[owner]:
            return ["%s: %r is not one of %s%s" % (path, value, sorted(ENUMS[owner]),
                                                    suggest(value, ENUMS[owner]))]
        return []
    if type_str == "int":
        return [] if is_int(value) else ["%s: expected an integer, got %r" % (path, value)]
    if type_str == "float":
        ok = is_int(value) or isinstance(value, float)
        return [] if ok else ["%s: expected a number, got %r" % (path, value)]
    if type_str == "bool":
        return [] if isinstance(value, bool) else ["%s: expected true/false, got %r" % (path, value)]
    if type_str in ("datetime", "date"):
        return [] if isinstance(value, str) else ["%s: expected a timestamp string" % path]
    if type_str == "object":
        # IntOrString (ports, maxUnavailable, ...) or free-form JSON.
        if isinstance(value, (str, dict)) or is_int(value):
            return []
        return ["%s: expected an integer or a string, got %r" % (path, value)]
    if not hasattr(k8s, type_str):
        return ["%s: no model %s in the kubernetes client" % (path, type_str)]
    return check_model(value, type_str, path, patch)


def check_model(value, cls_name, path, patch):
    if not isinstance(value, dict):
        return ["%s: expected a mapping (%s), got %s" % (path, cls_name, type(value).__name__)]
    fields = model_fields(cls_name)
    problems = []
    for key, v in value.items():
        sub = "%s.%s" % (path, key) if path else key
        if patch and key.startswith("$"):  # strategic merge patch directives
            continue
        if (cls_name, key) in EXTRA_FIELDS:
            if v is not None or not patch:
                problems += EXTRA_FIELDS[(cls_name, key)](v, sub, patch)
            continue
        if key not in fields:
            known = list(fields) + [f for (c, f) in EXTRA_FIELDS if c == cls_name]
            problems.append("%s: unknown field in %s%s" % (sub, cls_name, suggest(key, known)))
            continue
        problems += check_type(v, fields[key][1], sub, patch, (cls_name, key))
    if not patch:
        for req in sorted(required_fields(cls_name)):
            if value.get(req) is None:
                problems.append("%s: required field missing (%s.%s)" % (path + "." + req if path else req,
                                                                        cls_name, req))
    return problems


# Prometheus duration (monitoring.coreos.com Duration).
PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                           r"(([0-9]+)s)?(([0-9]+)ms)?)$")
PODMONITOR_SPEC_FIELDS = {
    "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
    "labelValueLengthLimit", "attachMetadata",
}
# Of these, port/path/interval/scrapeTimeout/scheme/honorLabels are type-checked; the
# rest are known PodMetricsEndpoint fields accepted as they are.
PODMONITOR_ENDPOINT_FIELDS = {
    "port", "portNumber", "targetPort", "path", "interval", "scrapeTimeout", "scheme", "params",
    "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "bearerTokenSecret",
    "basicAuth", "oauth2", "authorization", "tlsConfig", "followRedirects", "enableHttp2",
    "filterRunning", "proxyUrl",
}


def check_podmonitor(obj, patch=False):
    """monitoring.coreos.com/v1 PodMonitor: the fields these manifests use, by hand
    (the client has no model for CRDs)."""
    where = obj_id(obj)
    problems = []
    for k in obj:
        if k not in ("apiVersion", "kind", "metadata", "spec"):
            problems.append("%s: %s: unknown top-level field" % (where, k))
    problems += ["%s: %s" % (where, p) for p in check_type(obj.get("metadata"), "V1ObjectMeta",
                                                            "metadata", patch)]
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return problems + ["%s: spec: missing or not a mapping" % where]
    for k in spec:
        if k not in PODMONITOR_SPEC_FIELDS:
            problems.append("%s: spec.%s: unknown field in PodMonitorSpec%s"
                            % (where, k, suggest(k, PODMONITOR_SPEC_FIELDS)))
    if "selector" in spec or not patch:
        problems += ["%s: %s" % (where, p) for p in check_type(spec.get("selector"), "V1LabelSelector",
                                                                "spec.selector", patch)]
    endpoints = spec.get("podMetricsEndpoints")
    if endpoints is None and patch:
        return problems
    if not isinstance(endpoints, list) or not endpoints:
        return problems + ["%s: spec.podMetricsEndpoints: expected a non-empty list" % where]
    for i, ep in enumerate(endpoints):
        p = "%s: spec.podMetricsEndpoints[%d]" % (where, i)
        if not isinstance(ep, dict):
            problems.append("%s: expected a mapping" % p)
            continue
        for k in ep:
            if k not in PODMONITOR_ENDPOINT_FIELDS:
                problems.append("%s.%s: unknown field%s" % (p, k, suggest(k, PODMONITOR_ENDPOINT_FIELDS)))
        if "port" in ep and not isinstance(ep["port"], str):
            problems.append("%s.port: expected a container port name (string), got %r" % (p, ep["port"]))
        if not patch and "port" not in ep and "portNumber" not in ep:
            problems.append("%s: needs port (a container port name)" % p)
        if "path" in ep and not (isinstance(ep["path"], str) and ep["path"].startswith("/")):
            problems.append("%s.path: expected an absolute path, got %r" % (p, ep["path"]))
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not (isinstance(ep[k], str) and PROM_DURATION.match(ep[k])):
                problems.append("%s.%s: %r is not a Prometheus duration (e.g. 15s)" % (p, k, ep[k]))
        if "scheme" in ep and ep["scheme"] not in ("http", "https"):
            problems.append("%s.scheme: %r is not http or https" % (p, ep["scheme"]))
        if "honorLabels" in ep and not isinstance(ep["honorLabels"], bool):
            problems.append("%s.honorLabels: expected true/false" % p)
    return problems


def check_schema(obj, patch=False):
    """Schema problems of one object (patch=True: a strategic merge patch, where fields
    may be left out and null deletes)."""
    problems = check_identity(obj, obj_id(obj) if isinstance(obj, dict) else "?")
    if problems:
        return problems
    key = (obj["apiVersion"], obj["kind"])
    if key == ("monitoring.coreos.com/v1", "PodMonitor"):
        return check_podmonitor(obj, patch)
    if key not in MODELS:
        return ["%s: no schema for apiVersion %s kind %s (add it to MODELS or check it by hand)"
                % (obj_id(obj), key[0], key[1])]
    body = {k: v for k, v in obj.items() if not (patch and k == "$patch")}
    return ["%s: %s" % (obj_id(obj), p) for p in check_model(body, MODELS[key], "", patch)]


# ---------------------------------------------------------------------------------------
# Offline kustomize: resources, namespace, images, strategic merge patches

# Strategic merge keys of the lists these manifests patch (from the API's
# x-kubernetes-patch-merge-key); other lists are replaced whole, as the API does.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "volumeMounts": "mountPath", "env": "name", "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}


def merge_key(field, items):
    if field == "ports":  # container ports merge on containerPort, Service ports on port
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field)


def smp(base, patch):
    """Strategic merge patch of plain data (dicts from YAML)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = smp(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list) and merge_key(k, out[k] + v):
            key = merge_key(k, out[k] + v)
            merged = list(out[k])
            for item in v:
                idx = next((i for i, b in enumerate(merged)
                            if isinstance(b, dict) and isinstance(item, dict) and b.get(key) == item.get(key)), None)
                if isinstance(item, dict) and item.get("$patch") == "delete":
                    if idx is not None:
                        del merged[idx]
                elif idx is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[idx] = smp(merged[idx], item)
            out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    return out


def find_kustomization(directory):
    for n in KUSTOMIZATION_NAMES:
        p = os.path.join(directory, n)
        if os.path.isfile(p):
            return p
    return None


KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "components", "patches", "patchesStrategicMerge",
    "patchesJson6902", "namespace", "namePrefix", "nameSuffix", "commonLabels", "labels",
    "commonAnnotations", "images", "replicas", "configMapGenerator", "secretGenerator",
    "generatorOptions", "crds", "openapi", "replacements", "sortOptions", "buildMetadata",
}


def shown_path(path):
    rel = os.path.relpath(path, MANIFEST_DIR)
    return path if rel.startswith("..") else rel


def load_kustomization(directory):
    path = find_kustomization(directory)
    if path is None:
        raise ValueError("%s: no kustomization.yaml" % directory)
    docs = load_docs(path)
    if len(docs) != 1 or not is_kustomization(docs[0]):
        raise ValueError("%s: expected one Kustomization document" % path)
    return path, docs[0]


def kustomization_problems(directory):
    """Static problems of one kustomization (files, patch targets, images, orphans)."""
    path, kust = load_kustomization(directory)
    rel = shown_path(path)
    problems = []
    for k in kust:
        if k not in KUSTOMIZATION_FIELDS:
            problems.append("%s: %s: unknown field%s" % (rel, k, suggest(k, KUSTOMIZATION_FIELDS)))
    used = {os.path.abspath(path)}
    for r in kust.get("resources") or []:
        if not isinstance(r, str):
            problems.append("%s: resources: %r is not a path" % (rel, r))
            continue
        if "://" in r or r.startswith("github.com/"):
            problems.append("%s: resources: remote %s (this check is offline)" % (rel, r))
            continue
        p = os.path.normpath(os.path.join(directory, r))
        if os.path.isdir(p):
            if find_kustomization(p) is None:
                problems.append("%s: resources: directory %s has no kustomization.yaml" % (rel, r))
        elif os.path.isfile(p):
            used.add(os.path.abspath(p))
        else:
            problems.append("%s: resources: %s does not exist" % (rel, r))
    for k in ("patchesStrategicMerge", "patchesJson6902", "components", "configMapGenerator",
              "secretGenerator", "replacements", "namePrefix", "nameSuffix", "commonLabels", "labels",
              "replicas"):
        if k in kust:
            problems.append("%s: %s is not supported by the offline renderer in this test; "
                            "extend it (or use patches)" % (rel, k))
    try:
        base_objs = [] if problems else render_resources(directory, kust)
    except (ValueError, yaml.YAMLError, OSError) as e:
        problems.append("%s: %s" % (rel, e))
        base_objs = []
    for i, p in enumerate(kust.get("patches") or []):
        where = "%s: patches[%d]" % (rel, i)
        if not isinstance(p, dict) or ("path" in p) == ("patch" in p):
            problems.append("%s: needs exactly one of path, patch" % where)
            continue
        if "path" in p:
            pp = os.path.normpath(os.path.join(directory, p["path"]))
            if not os.path.isfile(pp):
                problems.append("%s: %s does not exist" % (where, p["path"]))
                continue
            used.add(os.path.abspath(pp))
            docs = load_docs(pp)
        else:
            docs = list(yaml.safe_load_all(p["patch"]))
        for d in docs:
            if not isinstance(d, dict) or "op" in d:  # a JSON 6902 patch is a list of ops
                problems.append("%s: only strategic merge patches are checked offline" % where)
                continue
            problems += ["%s: %s" % (where, x) for x in check_schema(d, patch=True)]
            if base_objs and not any(same_object(o, d) for o in base_objs):
                problems.append("%s: targets %s %s, which is not among the resources"
                                % (where, d.get("apiVersion"), obj_id(d)))
        if "target" in p:
            t = p["target"]
            if base_objs and not any(o.get("kind") == t.get("kind", o.get("kind")) and
                       o["metadata"]["name"] == t.get("name", o["metadata"]["name"]) for o in base_objs):
                problems.append("%s: target %r matches no resource" % (where, t))
    images = {image_name(c.get("image", "")) for o in base_objs for c in containers_of(o)}
    for img in kust.get("images") or []:
        if base_objs and img.get("name") not in images:
            problems.append("%s: images: %s is used by no container (%s)" % (rel, img.get("name"),
                                                                              sorted(images)))
    for f in yaml_files(directory):
        if os.path.dirname(f) == directory and os.path.abspath(f) not in used:
            problems.append("%s: %s is in the directory but used by no resource or patch"
                            % (rel, os.path.basename(f)))
    return problems


def same_object(a, b):
    def group(o):
        av = o.get("apiVersion", "")
        return av.split("/")[0] if "/" in av else ""
    return (a.get("kind") == b.get("kind") and group(a) == group(b)
            and (a.get("metadata") or {}).get("name") == (b.get("metadata") or {}).get("name"))


def image_name(image):
    name = image.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def render_resources(directory, kust):
    objs = []
    for r in kust.get("resources") or []:
        p = os.path.normpath(os.path.join(directory, r))
        if os.path.isdir(p):
            objs += render(p)
        else:
            objs += [d for d in load_docs(p)]
    return objs


def render(directory):
    """Offline kustomize build of a directory (the subset these manifests use)."""
    _, kust = load_kustomization(directory)
    objs = render_resources(directory, kust)
    for p in kust.get("patches") or []:
        docs = load_docs(os.path.join(directory, p["path"])) if "path" in p else list(
            yaml.safe_load_all(p["patch"]))
        for d in docs:
            idx = [i for i, o in enumerate(objs) if same_object(o, d)]
            if not idx:
                raise ValueError("patch %s matches no resource" % obj_id(d))
            if d.get("$patch") == "delete":
                del objs[idx[0]]
            else:
                objs[idx[0]] = smp(objs[idx[0]], d)
    if kust.get("namespace"):
        for o in objs:
            o.setdefault("metadata", {})["namespace"] = kust["namespace"]
    for img in kust.get("images") or []:
        for o in objs:
            for c in containers_of(o):
                if image_name(c.get("image", "")) == img["name"]:
                    old = c["image"]
                    name = img.get("newName", img["name"])
                    if "digest" in img:
                        c["image"] = "%s@%s" % (name, img["digest"])
                    else:
                        tag = img.get("newTag")
                        if tag is None and ":" in old.rsplit("/", 1)[-1]:
                            tag = old.rsplit(":", 1)[1]
                        c["image"] = name + (":%s" % tag if tag else "")
    return objs


def kustomization_dirs(root):
    return sorted({os.path.dirname(f) for f in yaml_files(root)
                   if os.path.basename(f) in KUSTOMIZATION_NAMES})


# ---------------------------------------------------------------------------------------
# Consistency of a rendered set of objects


def pod_template(obj):
    if obj.get("kind") in WORKLOAD_KINDS:
        return ((obj.get("spec") or {}).get("template") or {})
    return None


def pod_spec(obj):
    t = pod_template(obj)
    return (t.get("spec") or {}) if t is not None else None


def containers_of(obj, init=True):
    spec = pod_spec(obj)
    if not spec:
        return []
    out = list(spec.get("containers") or [])
    if init:
        out += list(spec.get("initContainers") or [])
    return [c for c in out if isinstance(c, dict)]


def selector_matches(selector, labels):
    """metav1.LabelSelector semantics; an empty selector matches everything."""
    if not isinstance(selector, dict):
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and key in labels and labels[key] in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def ns(obj):
    return (obj.get("metadata") or {}).get("namespace") or ""


def selected_workloads(objs, selector, namespace, map_selector=False):
    sel = {"matchLabels": selector} if map_selector else selector
    return [o for o in objs if o.get("kind") in WORKLOAD_KINDS and ns(o) == namespace
            and selector_matches(sel, (pod_template(o).get("metadata") or {}).get("labels"))]


ABSL_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|ms|s|m|h)")
ABSL_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_absl_duration(text):
    """absl::Duration flag syntax (5s, 1m30s, 250ms, 0); seconds, or None if invalid."""
    t = text.strip()
    if t == "0":
        return 0.0
    if not t or ABSL_DURATION.sub("", t.lstrip("+")) != "":
        return None
    return sum(float(n) * ABSL_UNITS[u] for n, u in ABSL_DURATION.findall(t))


@functools.lru_cache(maxsize=None)
def recserve_flags():
    """Flag name -> type of server/main.cc (None if the source is not beside this test)."""
    main = os.path.join(REPO, "server", "main.cc")
    if not os.path.isfile(main):
        return None
    with open(main, encoding="utf-8") as f:
        src = f.read()
    return {name: typ.strip() for typ, name in
            re.findall(r"ABSL_FLAG\(\s*([\w:<>]+)\s*,\s*(\w+)\s*,", src)}


def parse_flags(args):
    """--name=value / --name value / --name (bool) -> {name: value}; problems."""
    flags, problems, i = {}, [], 0
    args = [str(a) for a in args or []]
    while i < len(args):
        a = args[i]
        if not a.startswith("-"):
            problems.append("argument %r is not a flag" % a)
            i += 1
            continue
        name = a.lstrip("-")
        if "=" in name:
            name, value = name.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
            i += 1
        else:
            value = "true"
        flags[name] = value
        i += 1
    return flags, problems


def is_recserve_container(c):
    return c.get("name") == "recserve" or image_name(c.get("image", "")).endswith("/recserve") \
        or image_name(c.get("image", "")) == "recserve"


PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME


def check_workload(o):
    problems = []
    where = obj_id(o)
    spec = o.get("spec") or {}
    tmpl = pod_template(o)
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not selector_matches(spec.get("selector"), labels) or not spec.get("selector"):
        problems.append("%s: spec.selector %r does not match the pod template labels %r"
                        % (where, spec.get("selector"), labels))
    podspec = pod_spec(o)
    volumes = {v.get("name"): v for v in podspec.get("volumes") or []}
    for tsc in podspec.get("topologySpreadConstraints") or []:
        if not selector_matches(tsc.get("labelSelector"), labels):
            problems.append("%s: topologySpreadConstraint on %s does not select this workload's pods"
                            % (where, tsc.get("topologyKey")))
    ann = (tmpl.get("metadata") or {}).get("annotations") or {}
    all_ports = {p.get("containerPort") for c in containers_of(o) for p in c.get("ports") or []}
    if "prometheus.io/port" in ann:
        try:
            if int(ann["prometheus.io/port"]) not in all_ports:
                problems.append("%s: annotation prometheus.io/port %s is no container port"
                                % (where, ann["prometheus.io/port"]))
        except (TypeError, ValueError):
            problems.append("%s: annotation prometheus.io/port %r is not a port number"
                            % (where, ann["prometheus.io/port"]))
    default = ann.get("kubectl.kubernetes.io/default-container")
    names = [c.get("name") for c in containers_of(o)]
    if default is not None and default not in names:
        problems.append("%s: default-container %s is no container" % (where, default))
    if len(set(names)) != len(names):
        problems.append("%s: duplicate container names %s" % (where, names))
    for c in containers_of(o):
        cw = "%s: container %s" % (where, c.get("name"))
        ports = c.get("ports") or []
        port_names = [p.get("name") for p in ports if p.get("name")]
        port_numbers = {p.get("containerPort") for p in ports}
        if len(set(port_names)) != len(port_names):
            problems.append("%s: duplicate port names %s" % (cw, port_names))
        for n in port_names:
            if not (isinstance(n, str) and len(n) <= 15 and PORT_NAME.match(n)):
                problems.append("%s: port name %r is not an IANA service name (<= 15 chars)" % (cw, n))
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append("%s: volumeMount %s names no volume" % (cw, m.get("name")))
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if not probe:
                continue
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in probe:
                    port = (probe[handler] or {}).get("port")
                    ok = port in port_numbers if is_int(port) else port in port_names
                    if not ok:
                        problems.append("%s: %s.%s.port %r is not a container port (%s)"
                                        % (cw, probe_name, handler, port, sorted(map(str, port_numbers))))
        if is_recserve_container(c):
            problems += check_recserve_container(o, c, cw, port_numbers)
    return problems


def check_recserve_container(o, c, cw, port_numbers):
    """recserve's own conventions: real flags, declared ports, probes on its health
    services, and a termination grace period that outlasts the drain."""
    problems = []
    flags, errs = parse_flags(c.get("args"))
    problems += ["%s: %s" % (cw, e) for e in errs]
    known = recserve_flags()
    if known is not None:
        for name in flags:
            base = name[2:] if name.startswith("no") and known.get(name[2:]) == "bool" else name
            if base not in known and base not in ("flagfile", "fromenv", "tryfromenv", "undefok", "v"):
                problems.append("%s: --%s is not a recserve flag%s" % (cw, name, suggest(name, known)))
    for flag, default in (("port", 8500), ("metrics_port", 9090)):
        try:
            value = int(flags.get(flag, default))
        except ValueError:
            problems.append("%s: --%s=%s is not a number" % (cw, flag, flags[flag]))
            continue
        if value > 0 and value not in port_numbers:
            problems.append("%s: --%s=%d is not a declared container port" % (cw, flag, value))
    grpc_port = int(flags.get("port", 8500)) if str(flags.get("port", 8500)).isdigit() else None
    for probe_name, service in (("startupProbe", None), ("readinessProbe", "recserve.v1.Recommender"),
                                ("livenessProbe", "")):
        probe = c.get(probe_name)
        if not probe:
            if probe_name != "startupProbe":
                problems.append("%s: no %s" % (cw, probe_name))
            continue
        g = probe.get("grpc")
        if not isinstance(g, dict):
            problems.append("%s: %s should be a native gRPC probe on the health service" % (cw, probe_name))
            continue
        if g.get("port") != grpc_port:
            problems.append("%s: %s.grpc.port %r is not --port (%r)" % (cw, probe_name, g.get("port"), grpc_port))
        if service is not None and g.get("service", "") != service:
            problems.append("%s: %s.grpc.service should be %r (%s), not %r" % (
                cw, probe_name, service, "readiness" if service else "liveness", g.get("service", "")))
    drain = parse_absl_duration(flags.get("drain_delay", "0"))
    grace = parse_absl_duration(flags.get("shutdown_grace", "10s"))
    if drain is None or grace is None:
        problems.append("%s: --drain_delay/--shutdown_grace are not absl durations (%r, %r)"
                        % (cw, flags.get("drain_delay"), flags.get("shutdown_grace")))
    else:
        period = pod_spec(o).get("terminationGracePeriodSeconds", 30)
        if not (is_int(period) and period > drain + grace):
            problems.append("%s: terminationGracePeriodSeconds %r must exceed drain_delay + "
                            "shutdown_grace = %gs, or the kubelet kills in-flight calls"
                            % (cw, period, drain + grace))
    return problems


def check_consistency(objs):
    """Cross-object problems of a rendered set."""
    problems = []
    seen = {}
    for o in objs:
        key = (o.get("apiVersion", "").split("/")[0] if "/" in o.get("apiVersion", "") else "",
               o.get("kind"), ns(o), (o.get("metadata") or {}).get("name"))
        if key in seen:
            problems.append("%s: defined twice" % obj_id(o))
        seen[key] = o

    def exists(kind, name, namespace):
        return any(o.get("kind") == kind and ns(o) == namespace and
                   (o.get("metadata") or {}).get("name") == name for o in objs)

    hpa_targets = set()
    for o in objs:
        kind, where, spec = o.get("kind"), obj_id(o), o.get("spec") or {}
        if kind in WORKLOAD_KINDS:
            problems += check_workload(o)
            podspec = pod_spec(o)
            for v in podspec.get("volumes") or []:
                claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and not exists("PersistentVolumeClaim", claim, ns(o)):
                    problems.append("%s: volume %s: PersistentVolumeClaim %s is not defined"
                                    % (where, v.get("name"), claim))
                cm = v.get("configMap") or {}
                if cm and not cm.get("optional") and not exists("ConfigMap", cm.get("name"), ns(o)):
                    problems.append("%s: volume %s: ConfigMap %s is not defined" % (where, v.get("name"),
                                                                                   cm.get("name")))
            sa = podspec.get("serviceAccountName")
            if sa and sa != "default" and not exists("ServiceAccount", sa, ns(o)):
                problems.append("%s: ServiceAccount %s is not defined" % (where, sa))
        elif kind == "Service":
            sel = spec.get("selector")
            if not sel:
                problems.append("%s: no selector" % where)
                continue
            pods = selected_workloads(objs, sel, ns(o), map_selector=True)
            if not pods:
                problems.append("%s: selector %r matches no workload's pods" % (where, sel))
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                for w in pods:
                    cports = [p for c in containers_of(w, init=False) for p in c.get("ports") or []]
                    ok = (any(p.get("containerPort") == target for p in cports) if is_int(target)
                          else any(p.get("name") == target for p in cports))
                    if not ok:
                        problems.append("%s: port %s targetPort %r is no container port of %s"
                                        % (where, port.get("name"), target, obj_id(w)))
        elif kind == "PodDisruptionBudget":
            if not selected_workloads(objs, spec.get("selector"), ns(o)):
                problems.append("%s: selector %r matches no workload's pods" % (where, spec.get("selector")))
            if ("maxUnavailable" in spec) == ("minAvailable" in spec):
                problems.append("%s: set exactly one of maxUnavailable, minAvailable" % where)
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef") or {}
            target = [w for w in objs if w.get("kind") == ref.get("kind") and ns(w) == ns(o)
                      and (w.get("metadata") or {}).get("name") == ref.get("name")
                      and w.get("apiVersion") == ref.get("apiVersion")]
            if not target:
                problems.append("%s: scaleTargetRef %s %s/%s is not defined"
                                % (where, ref.get("apiVersion"), ref.get("kind"), ref.get("name")))
            else:
                hpa_targets.add(id(target[0]))
                if "replicas" in (target[0].get("spec") or {}):
                    problems.append("%s: %s sets spec.replicas although the HPA scales it (each apply "
                                    "with a changed value resets the HPA's count)" % (where, obj_id(target[0])))
                if spec.get("metrics"):
                    for m in spec["metrics"]:
                        if m.get("type") == "Resource":
                            res = (m.get("resource") or {}).get("name")
                            for c in containers_of(target[0], init=False):
                                if res not in ((c.get("resources") or {}).get("requests") or {}):
                                    problems.append("%s: scales on %s utilization but container %s "
                                                    "has no %s request" % (where, res, c.get("name"), res))
            lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas")
            if is_int(lo) and is_int(hi) and lo > hi:
                problems.append("%s: minReplicas %d > maxReplicas %d" % (where, lo, hi))
        elif kind == "PodMonitor":
            pods = selected_workloads(objs, spec.get("selector"), ns(o))
            if not pods:
                problems.append("%s: selector %r matches no workload's pods" % (where, spec.get("selector")))
            for ep in spec.get("podMetricsEndpoints") or []:
                for w in pods:
                    names = {p.get("name") for c in containers_of(w, init=False) for p in c.get("ports") or []}
                    if "port" in ep and ep["port"] not in names:
                        problems.append("%s: port %r is no container port name of %s (%s)"
                                        % (where, ep["port"], obj_id(w), sorted(n for n in names if n)))
    return problems


def all_problems(objs):
    problems = []
    for o in objs:
        problems += check_schema(o)
    return problems + check_consistency(objs)


# ---------------------------------------------------------------------------------------
# Tests


def kubectl():
    return shutil.which("kubectl")


def normalize(objs):
    """Order-insensitive view of a rendered set, for comparing renderers."""
    def norm(v, field=None):
        if isinstance(v, dict):
            return {k: norm(x, k) for k, x in v.items()}
        if isinstance(v, list):
            items = [norm(x) for x in v]
            key = merge_key(field, items) if field else None
            if key and all(isinstance(i, dict) for i in items):
                items.sort(key=lambda i: str(i.get(key)))
            return items
        return v
    return sorted((norm(o) for o in objs), key=lambda o: (o.get("kind"), ns(o), o["metadata"]["name"]))


class Manifests(unittest.TestCase):
    """The manifests under MANIFEST_DIR."""

    @classmethod
    def setUpClass(cls):
        cls.files = yaml_files(MANIFEST_DIR)
        cls.dirs = kustomization_dirs(MANIFEST_DIR)

    def assertNoProblems(self, problems):
        self.assertFalse(problems, "\n" + "\n".join(problems))

    def test_there_are_manifests(self):
        self.assertTrue(self.files, "no YAML under %s" % MANIFEST_DIR)
        self.assertTrue(self.dirs, "no kustomization.yaml under %s" % MANIFEST_DIR)

    def test_yaml_parses_and_objects_have_identity(self):
        problems = []
        for f in self.files:
            rel = os.path.relpath(f, MANIFEST_DIR)
            try:
                docs = load_docs(f)
            except yaml.YAMLError as e:
                problems.append("%s: does not parse: %s" % (rel, e))
                continue
            if not docs:
                problems.append("%s: no documents" % rel)
            for i, d in enumerate(docs):
                if not is_kustomization(d):
                    problems += check_identity(d, "%s[%d]" % (rel, i))
        self.assertNoProblems(problems)

    def test_kustomizations_reference_what_exists(self):
        for d in self.dirs:
            with self.subTest(kustomization=os.path.relpath(d, MANIFEST_DIR)):
                self.assertNoProblems(kustomization_problems(d))

    def test_resource_files_match_the_api_schema(self):
        """Every resource document (not patches) against the client's models."""
        resources = set()
        for d in self.dirs:
            _, kust = load_kustomization(d)
            for r in kust.get("resources") or []:
                p = os.path.normpath(os.path.join(d, r))
                if os.path.isfile(p):
                    resources.add(p)
        self.assertTrue(resources)
        for f in sorted(resources):
            with self.subTest(file=os.path.relpath(f, MANIFEST_DIR)):
                problems = []
                for doc in load_docs(f):
                    problems += check_schema(doc)
                self.assertNoProblems(problems)

    def test_rendered_kustomizations_are_consistent(self):
        for d in self.dirs:
            with self.subTest(kustomization=os.path.relpath(d, MANIFEST_DIR)):
                objs = render(d)
                self.assertTrue(objs)
                self.assertNoProblems(all_problems(objs))

    def test_base_has_the_recserve_objects(self):
        base = os.path.join(MANIFEST_DIR, "base")
        if not os.path.isdir(base):
            self.skipTest("no base/ under %s" % MANIFEST_DIR)
        kinds = {(o["kind"], o["metadata"]["name"]) for o in render(base)}
        for want in [("Deployment", "recserve"), ("Service", "recserve"), ("Service", "recserve-headless"),
                     ("HorizontalPodAutoscaler", "recserve"), ("PodDisruptionBudget", "recserve"),
                     ("PodMonitor", "recserve")]:
            self.assertIn(want, kinds)
        headless = [o for o in render(base) if o["metadata"]["name"] == "recserve-headless"][0]
        self.assertEqual(headless["spec"].get("clusterIP"), "None")

    @unittest.skipUnless(kubectl(), "kubectl not on PATH")
    def test_kubectl_kustomize_output(self):
        for d in self.dirs:
            with self.subTest(kustomization=os.path.relpath(d, MANIFEST_DIR)):
                run = subprocess.run([kubectl(), "kustomize", d], capture_output=True, text=True, timeout=120)
                self.assertEqual(run.returncode, 0, run.stderr)
                objs = [o for o in yaml.safe_load_all(run.stdout) if o is not None]
                self.assertNoProblems(all_problems(objs))
                self.assertEqual(normalize(objs), normalize(render(d)),
                                 "kubectl kustomize and the offline rendering differ")


class ValidatorSelfTest(unittest.TestCase):
    """The checks must be able to fail: break copies of the manifests on purpose."""

    @classmethod
    def setUpClass(cls):
        base = os.path.join(MANIFEST_DIR, "base")
        if not os.path.isdir(base):
            raise unittest.SkipTest("no base/ under %s" % MANIFEST_DIR)
        cls.objs = render(base)

    def broken(self, mutate):
        objs = copy.deepcopy(self.objs)
        mutate({o["kind"]: o for o in objs}, objs)
        return all_problems(objs)

    def assertReported(self, problems, *fragments):
        text = "\n".join(problems)
        for f in fragments:
            self.assertIn(f, text, "expected a problem mentioning %r, got:\n%s" % (f, text))

    @staticmethod
    def container(by_kind):
        return by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]

    def test_unbroken_base_passes(self):
        self.assertEqual(all_problems(copy.deepcopy(self.objs)), [])

    def test_misspelled_field(self):
        def mutate(k, _):
            spec = k["Deployment"]["spec"]["template"]["spec"]
            spec["contianers"] = spec.pop("containers")
        self.assertReported(self.broken(mutate), "spec.template.spec.contianers: unknown field",
                            "did you mean containers?", "containers: required field missing")

    def test_probe_port_not_a_container_port(self):
        self.assertReported(self.broken(lambda k, _: self.container(k)["readinessProbe"]["grpc"].update(port=8501)),
                            "readinessProbe.grpc.port 8501 is not a container port")

    def test_grpc_probe_checked_by_hand(self):
        def mutate(k, _):
            self.container(k)["livenessProbe"]["grpc"] = {"port": "grpc", "servce": ""}
        self.assertReported(self.broken(mutate), "livenessProbe.grpc.servce: unknown field",
                            "livenessProbe.grpc.port: expected an integer")

    def test_wrong_scalar_types(self):
        def mutate(k, _):
            self.container(k)["ports"][0]["containerPort"] = "8500"
            k["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = 9090
            self.container(k)["securityContext"]["runAsNonRoot"] = "yes"
        self.assertReported(self.broken(mutate), "ports[0].containerPort: expected an integer",
                            "prometheus.io/port: expected a string", "runAsNonRoot: expected true/false")

    def test_missing_required_field(self):
        self.assertReported(self.broken(lambda k, _: self.container(k).pop("name")),
                            "containers[0].name: required field missing")

    def test_bad_enum(self):
        def mutate(k, _):
            k["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"][0][
                "whenUnsatisfiable"] = "ScheduleAnyWay"
        self.assertReported(self.broken(mutate), "did you mean ScheduleAnyway?")

    def test_selector_mismatch(self):
        def mutate(k, _):
            k["Deployment"]["spec"]["selector"]["matchLabels"] = {"app": "recserv"}
            k["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] = {"app": "other"}
        self.assertReported(self.broken(mutate), "does not match the pod template labels",
                            "PodDisruptionBudget/recserve: selector")

    def test_service_target_port_unknown(self):
        self.assertReported(self.broken(lambda k, _: k["Service"]["spec"]["ports"][0].update(targetPort="gprc")),
                            "targetPort 'gprc' is no container port")

    def test_grace_period_too_short(self):
        def mutate(k, _):
            k["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
        self.assertReported(self.broken(mutate), "must exceed drain_delay + shutdown_grace = 25s")

    def test_unknown_recserve_flag(self):
        if recserve_flags() is None:
            self.skipTest("server/main.cc not beside this test")
        self.assertReported(self.broken(lambda k, _: self.container(k)["args"].append("--drain-delay=5s")),
                            "--drain-delay is not a recserve flag")

    def test_hpa_target_missing(self):
        self.assertReported(self.broken(lambda k, _: k["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
                                        .update(name="recserv")),
                            "scaleTargetRef apps/v1 Deployment/recserv is not defined")

    def test_podmonitor_checked_by_hand(self):
        def mutate(k, _):
            ep = k["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
            ep.update(port="metric", interval="15 seconds", pth="/metrics")
        self.assertReported(self.broken(mutate), "port 'metric' is no container port name",
                            "'15 seconds' is not a Prometheus duration", "pth: unknown field")

    def test_missing_claim_and_volume(self):
        def mutate(k, objs):
            objs.remove(k["PersistentVolumeClaim"])
            self.container(k)["volumeMounts"][0]["name"] = "model"
        self.assertReported(self.broken(mutate), "PersistentVolumeClaim recserve-models is not defined",
                            "volumeMount model names no volume")

    def test_kind_under_wrong_group(self):
        self.assertReported(self.broken(lambda k, _: k["Deployment"].update(apiVersion="v1")),
                            "no schema for apiVersion v1 kind Deployment")

    def test_kustomization_problems(self):
        with tempfile.TemporaryDirectory() as tmp:
            base = os.path.join(tmp, "base")
            shutil.copytree(os.path.join(MANIFEST_DIR, "base"), base)
            kust = os.path.join(base, "kustomization.yaml")
            with open(kust, encoding="utf-8") as f:
                text = f.read()
            with open(kust, "w", encoding="utf-8") as f:
                f.write(text.replace("- service.yaml", "- servce.yaml"))
            overlay = os.path.join(tmp, "overlay")
            os.mkdir(overlay)
            with open(os.path.join(overlay, "kustomization.yaml"), "w", encoding="utf-8") as f:
                f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                        "resources: [../base]\npatches:\n  - path: p.yaml\n")
            with open(os.path.join(overlay, "p.yaml"), "w", encoding="utf-8") as f:
                f.write("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: recserv}\n"
                        "spec: {replicas: 2}\n")
            with open(os.path.join(overlay, "stray.yaml"), "w", encoding="utf-8") as f:
                f.write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
            self.assertReported(kustomization_problems(base), "resources: servce.yaml does not exist",
                                "service.yaml is in the directory but used by no resource or patch")
            with open(kust, "w", encoding="utf-8") as f:
                f.write(text)
            self.assertReported(kustomization_problems(overlay),
                                "targets apps/v1 Deployment/recserv, which is not among the resources",
                                "stray.yaml is in the directory but used by no resource or patch")

    def test_absl_durations(self):
        self.assertEqual(parse_absl_duration("5s"), 5)
        self.assertEqual(parse_absl_duration("1m30s"), 90)
        self.assertAlmostEqual(parse_absl_duration("250ms"), 0.25)
        self.assertEqual(parse_absl_duration("0"), 0)
        self.assertIsNone(parse_absl_duration("5"))
        self.assertIsNone(parse_absl_duration("5 s"))

    def test_strategic_merge_patch(self):
        base = {"spec": {"containers": [{"name": "a", "args": ["1", "2"], "image": "x"}],
                         "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "c"}}]}}
        patch = {"spec": {"containers": [{"name": "a", "args": ["3"]}, {"name": "b", "image": "y"}],
                          "volumes": [{"name": "m", "persistentVolumeClaim": None, "emptyDir": {}}]}}
        self.assertEqual(smp(base, patch), {"spec": {
            "containers": [{"name": "a", "args": ["3"], "image": "x"}, {"name": "b", "image": "y"}],
            "volumes": [{"name": "m", "emptyDir": {}}]}})


def main():
    global MANIFEST_DIR
    rest = [sys.argv[0]]
    for a in sys.argv[1:]:
        if not a.startswith("-") and os.path.isdir(a):
            MANIFEST_DIR = os.path.abspath(a)
        else:
            rest.append(a)
    if not os.path.isdir(MANIFEST_DIR):
        sys.exit("k8s_manifests_test: no manifest directory %s" % MANIFEST_DIR)
    unittest.main(argv=rest)


if __name__ == "__main__":
    main()
