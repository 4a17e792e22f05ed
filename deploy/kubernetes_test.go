package deploy

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/topoha/topoha/config"
)

// The manifests are decoded strictly into these types, so that a misspelt field (readOnlyRootFilesystm)
// fails here instead of being dropped silently by the API server. They hold only what the manifests use.

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type typeMeta struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type namespaceObject struct {
	typeMeta `yaml:",inline"`
}

type configMapObject struct {
	typeMeta `yaml:",inline"`
	Data     map[string]string `yaml:"data"`
}

type secretObject struct {
	typeMeta   `yaml:",inline"`
	Type       string            `yaml:"type"`
	StringData map[string]string `yaml:"stringData"`
}

type serviceObject struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type deploymentObject struct {
	typeMeta `yaml:",inline"`
	Spec     struct {
		Replicas int `yaml:"replicas"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxSurge       int `yaml:"maxSurge"`
				MaxUnavailable int `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     podSpec    `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
	TerminationGracePeriodSeconds int   `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   bool `yaml:"runAsNonRoot"`
		RunAsUser      int  `yaml:"runAsUser"`
		RunAsGroup     int  `yaml:"runAsGroup"`
		FSGroup        int  `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		} `yaml:"secret"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		ValueFrom struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  probe `yaml:"livenessProbe"`
	ReadinessProbe probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

var (
	documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)
	// apiVersions are the kinds the manifests may hold, with their API version.
	apiVersions = map[string]string{"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1"}
)

// manifests holds every object of deploy/kubernetes/, by kind and name.
type manifests struct {
	namespaces  map[string]namespaceObject
	configMaps  map[string]configMapObject
	secrets     map[string]secretObject
	services    map[string]serviceObject
	deployments map[string]deploymentObject
}

// decodeInto strictly decodes one YAML document into a new entry of m.
func decodeInto[T any](m map[string]T, doc, name string) error {
	var obj T
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&obj); err != nil {
		return err
	}
	if _, dup := m[name]; dup {
		return errors.New("defined twice")
	}
	m[name] = obj
	return nil
}

func readManifests(t *testing.T) manifests {
	m := manifests{map[string]namespaceObject{}, map[string]configMapObject{}, map[string]secretObject{},
		map[string]serviceObject{}, map[string]deploymentObject{}}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under deploy/kubernetes: %v", err)
	}
	for _, file := range files {
		// Split by hand rather than with a yaml.Decoder, so that strict decoding reports the lines of the file.
		for i, doc := range documentSeparator.Split(string(repoFile(t, "deploy/"+file)), -1) {
			var head typeMeta
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: document %d: %v", file, i, err)
			}
			where := fmt.Sprintf("%s: document %d, %s %s", file, i, head.Kind, head.Metadata.Name)
			if head.Metadata.Name == "" {
				t.Errorf("%s: no metadata.name", where)
			}
			if head.Kind != "Namespace" && head.Metadata.Namespace != "topoha" {
				t.Errorf("%s: namespace %q, want topoha", where, head.Metadata.Namespace)
			}
			if api, known := apiVersions[head.Kind]; !known || head.APIVersion != api {
				t.Errorf("%s: apiVersion %q, want %q for a known kind", where, head.APIVersion, api)
				continue
			}
			var err error
			switch head.Kind {
			case "Namespace":
				err = decodeInto(m.namespaces, doc, head.Metadata.Name)
			case "ConfigMap":
				err = decodeInto(m.configMaps, doc, head.Metadata.Name)
			case "Secret":
				err = decodeInto(m.secrets, doc, head.Metadata.Name)
			case "Service":
				err = decodeInto(m.services, doc, head.Metadata.Name)
			case "Deployment":
				err = decodeInto(m.deployments, doc, head.Metadata.Name)
			}
			if err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
	return m
}

// mountOf returns where c mounts the pod's volume of the ConfigMap or Secret called source.
func mountOf(pod podSpec, c container, source string) string {
	for _, v := range pod.Volumes {
		if (v.ConfigMap == nil || v.ConfigMap.Name != source) && (v.Secret == nil || v.Secret.SecretName != source) {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name {
				return vm.MountPath
			}
		}
	}
	return ""
}

// writableMount says whether c mounts an emptyDir of the pod read-write at path.
func writableMount(pod podSpec, c container, path string) bool {
	for _, v := range pod.Volumes {
		if v.EmptyDir == nil {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name && vm.MountPath == path && !vm.ReadOnly {
				return true
			}
		}
	}
	return false
}

func TestKubernetesManifests(t *testing.T) {
	m := readManifests(t)
	if _, ok := m.namespaces["topoha"]; !ok {
		t.Error("no Namespace topoha")
	}
	cm, ok := m.configMaps["topoha-config"]
	if !ok {
		t.Fatal("no ConfigMap topoha-config")
	}
	secret, ok := m.secrets["topoha-http-token"]
	if !ok {
		t.Fatal("no Secret topoha-http-token (the example)")
	}
	svc, ok := m.services["topoha"]
	if !ok {
		t.Fatal("no Service topoha")
	}

	// The config must be one topoha run accepts. Its token file lives in the Secret's mount, which does not
	// exist here: check that it is there, then point the config at a temporary copy.
	text := cm.Data["config.yaml"]
	var raw struct {
		HTTP struct {
			TokenFile string `yaml:"token_file"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil || raw.HTTP.TokenFile == "" {
		t.Fatalf("ConfigMap topoha-config: config.yaml with an http.token_file: %v", err)
	}
	tokenDir, tokenKey := path.Split(raw.HTTP.TokenFile)
	if secret.StringData[tokenKey] == "" {
		t.Errorf("http.token_file %s: the Secret has no key %q", raw.HTTP.TokenFile, tokenKey)
	}
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(strings.ReplaceAll(text, raw.HTTP.TokenFile, token)))
	if err != nil {
		t.Fatalf("ConfigMap topoha-config: topoha refuses config.yaml:\n%v", err)
	}

	if len(m.deployments) != len(cfg.DCs) {
		t.Errorf("%d Deployments for %d DCs; want one controller per DC", len(m.deployments), len(cfg.DCs))
	}
	for _, dc := range cfg.DCNames() {
		name := "topoha-" + dc
		d, ok := m.deployments[name]
		if !ok {
			t.Errorf("no Deployment %s for DC %s", name, dc)
			continue
		}
		checkDeployment(t, d, dc, cfg, svc, strings.TrimSuffix(tokenDir, "/"))
	}

	// The Deployments are one file per DC; only the DC's name may differ, or they drift apart.
	dc1 := string(repoFile(t, "deploy/kubernetes/deployment-dc1.yaml"))
	if dc2 := string(repoFile(t, "deploy/kubernetes/deployment-dc2.yaml")); strings.ReplaceAll(dc1, "dc1", "dc2") != dc2 {
		t.Error("deployment-dc2.yaml is not deployment-dc1.yaml with dc1 replaced by dc2")
	}
}

func checkDeployment(t *testing.T, d deploymentObject, dc string, cfg *config.Config, svc serviceObject, tokenDir string) {
	where := "Deployment " + d.Metadata.Name
	spec := d.Spec
	pod := spec.Template.Spec
	if spec.Replicas != 1 {
		t.Errorf("%s: replicas %d, want 1", where, spec.Replicas)
	}
	for k, v := range spec.Selector.MatchLabels {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("%s: the pod template lacks the selector's label %s=%s", where, k, v)
		}
	}
	for k, v := range svc.Spec.Selector {
		if spec.Template.Metadata.Labels[k] != v {
			t.Errorf("%s: Service topoha would not select its pods (label %s=%s)", where, k, v)
		}
	}
	if need := stopWindow(cfg.Failover); time.Duration(pod.TerminationGracePeriodSeconds)*time.Second < need {
		t.Errorf("%s: terminationGracePeriodSeconds %d, want at least %s for a failover in progress with the ConfigMap's timeouts",
			where, pod.TerminationGracePeriodSeconds, need)
	}
	sc := pod.SecurityContext
	if !sc.RunAsNonRoot || sc.RunAsUser == 0 || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: pod securityContext %+v, want runAsNonRoot, a non-zero runAsUser and seccomp RuntimeDefault", where, sc)
	}
	// The image's own user (build/image.sh), the one its /etc/passwd names.
	if image := string(repoFile(t, "build/image.sh")); !strings.Contains(image, fmt.Sprintf("--user %d:%d", sc.RunAsUser, sc.RunAsGroup)) {
		t.Errorf("%s: runAsUser %d, runAsGroup %d are not the user build/image.sh gives the image", where, sc.RunAsUser, sc.RunAsGroup)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
	}
	c := pod.Containers[0]
	csc := c.SecurityContext
	if !csc.ReadOnlyRootFilesystem || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		len(csc.Capabilities.Drop) != 1 || csc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("%s: container securityContext %+v, want a read-only root, no privilege escalation, drop ALL", where, csc)
	}
	// With the root read-only, vtctldclient (every promote, switchover and fence command) needs a writable
	// /tmp for its glog files, or it exits 2.
	if !writableMount(pod, c, "/tmp") {
		t.Errorf("%s: no emptyDir mounted read-write at /tmp: vtctldclient cannot write its glog files on a read-only root, and exits 2", where)
	}

	flags := runArgs(t, where+" args", c.Args)
	if flags["--dc"] != dc || flags["--log-format"] != "json" {
		t.Errorf("%s: --dc %q --log-format %q, want %s and json", where, flags["--dc"], flags["--log-format"], dc)
	}
	configDir := mountOf(pod, c, "topoha-config")
	if flags["--config"] != configDir+"/config.yaml" {
		t.Errorf("%s: --config %q, but ConfigMap topoha-config is mounted at %q", where, flags["--config"], configDir)
	}
	if got := mountOf(pod, c, "topoha-http-token"); got != tokenDir {
		t.Errorf("%s: Secret topoha-http-token is mounted at %q, but http.token_file is in %q", where, got, tokenDir)
	}
	_, port, _ := strings.Cut(flags["--listen"], ":")
	if !strings.HasPrefix(flags["--listen"], "0.0.0.0:") || len(c.Ports) != 1 || strconv.Itoa(c.Ports[0].ContainerPort) != port {
		t.Errorf("%s: --listen %q and container ports %+v: want 0.0.0.0:PORT, and PORT as the one container port", where, flags["--listen"], c.Ports)
	}
	if sp := svc.Spec.Ports; len(sp) != 1 || len(c.Ports) != 1 || sp[0].TargetPort != c.Ports[0].Name ||
		strconv.Itoa(sp[0].Port) != svc.Metadata.Annotations["prometheus.io/port"] {
		t.Errorf("%s: Service topoha ports %+v must be one port targeting the container's, with prometheus.io/port its number", where, sp)
	}

	for _, pr := range []struct {
		name  string
		probe probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if pr.probe.HTTPGet.Path != pr.path || len(c.Ports) != 1 || pr.probe.HTTPGet.Port != c.Ports[0].Name {
			t.Errorf("%s: %s %+v, want GET %s on the container's port", where, pr.name, pr.probe.HTTPGet, pr.path)
		}
	}
	// The control loop slows down while an etcd times out (a DC loss), and /healthz may fail for a while:
	// a restart then only adds a controller that has to start during the outage.
	if lp := c.LivenessProbe; time.Duration(lp.PeriodSeconds*lp.FailureThreshold)*time.Second < time.Minute {
		t.Errorf("%s: the liveness probe restarts after %ds of failures; give it at least a minute", where, lp.PeriodSeconds*lp.FailureThreshold)
	}
}
