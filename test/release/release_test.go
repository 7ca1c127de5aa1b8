// Package release runs `make release-dry-run` (hack/release/build.sh) and
// checks what a release would publish: binaries for both architectures
// stamped with the tag and commit, one multi-platform OCI image per binary,
// both charts at the release's version, and the release notes.
//
// To keep `make test` affordable on two cores it builds one binary (the
// gateway) for both architectures; the workflow builds all five the same
// way.
package release

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"sigs.k8s.io/yaml"
)

var root = filepath.Join("..", "..")

const (
	version = "v0.0.0-dryrun.1"
	binary  = "gateway"
)

var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func helm(t *testing.T) string {
	t.Helper()
	p := os.Getenv("HELM")
	if p == "" {
		p = filepath.Join(root, "bin", "helm")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("helm not found at %s: run `make helm` or set HELM", abs)
	}
	return abs
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func TestReleaseDryRun(t *testing.T) {
	helmBin := helm(t)
	out := t.TempDir()
	before := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	run(t, "make", "--no-print-directory", "release-dry-run", "VERSION="+version, "RELEASE_DIR="+out,
		"RELEASE_BINARIES="+binary, "HELM="+helmBin)
	after := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	// Others may commit while it runs: the release is of HEAD as it was
	// when the dry run began, which release.env records.
	env, err := os.ReadFile(filepath.Join(out, "release.env"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "VERSION="+version+"\n") {
		t.Fatalf("release.env does not record VERSION=%s:\n%s", version, env)
	}
	_, revision, _ := strings.Cut(string(env), "REVISION=")
	revision = strings.TrimSpace(revision)
	if revision != before && revision != after {
		t.Fatalf("release.env records revision %q, want HEAD (%s or %s)", revision, before, after)
	}

	t.Run("binaries are cross-compiled and stamped with the tag and commit", func(t *testing.T) {
		for arch, machine := range machines {
			path := filepath.Join(out, "bin", "linux_"+arch, binary)
			if got := elfMachine(t, path); got != machine {
				t.Errorf("%s is built for %v, want %v", path, got, machine)
			}
			// What services/kit's build_info reads at run time.
			info, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Fatalf("read build info of %s: %v", path, err)
			}
			if info.Main.Version != version {
				t.Errorf("%s: version %q, want %q", path, info.Main.Version, version)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["vcs.revision"] != revision || settings["vcs.modified"] != "false" {
				t.Errorf("%s: vcs.revision %q, vcs.modified %q; want %s, false", path,
					settings["vcs.revision"], settings["vcs.modified"], revision)
			}
		}
	})

	t.Run("the image is one OCI index with an image per platform", func(t *testing.T) {
		dir := untar(t, filepath.Join(out, "images", binary+".oci.tar"))
		top, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatalf("read OCI layout: %v", err)
		}
		manifest, err := top.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(manifest.Manifests) != 1 {
			t.Fatalf("the layout's index.json lists %d entries, want 1 (the image index)", len(manifest.Manifests))
		}
		entry := manifest.Manifests[0]
		if got, want := entry.Annotations["io.containerd.image.name"], "ghcr.io/courier-dev/"+binary+":"+version; got != want {
			t.Errorf("image name %q, want %q", got, want)
		}
		idx, err := top.ImageIndex(entry.Digest)
		if err != nil {
			t.Fatalf("read the image index: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if got := im.Annotations["org.opencontainers.image.version"]; got != version {
			t.Errorf("index annotation org.opencontainers.image.version = %q, want %q", got, version)
		}
		seen := map[string]bool{}
		for _, d := range im.Manifests {
			if d.Platform == nil || d.Platform.OS != "linux" {
				t.Fatalf("manifest %s has platform %v, want linux/<arch>", d.Digest, d.Platform)
			}
			arch := d.Platform.Architecture
			seen[arch] = true
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != arch || cf.Config.User != "65532:65532" ||
				strings.Join(cf.Config.Entrypoint, " ") != "/"+binary {
				t.Errorf("%s image: architecture %q, user %q, entrypoint %v", arch, cf.Architecture, cf.Config.User, cf.Config.Entrypoint)
			}
			for k, want := range map[string]string{
				"org.opencontainers.image.version":  version,
				"org.opencontainers.image.revision": revision,
				"org.opencontainers.image.source":   "https://github.com/courier-dev/courier",
			} {
				if got := cf.Config.Labels[k]; got != want {
					t.Errorf("%s image label %s = %q, want %q", arch, k, got, want)
				}
			}
			// The image's binary is the one built for its platform.
			bin := fileFromImage(t, img, binary)
			if got := elfMachineOf(t, bin); got != machines[arch] {
				t.Errorf("the %s image holds a binary for %v", arch, got)
			}
		}
		for arch := range machines {
			if !seen[arch] {
				t.Errorf("the index has no linux/%s image (has %v)", arch, seen)
			}
		}
	})

	t.Run("charts are packaged at the release's version, images at its tag", func(t *testing.T) {
		chartVersion := strings.TrimPrefix(version, "v")
		for _, chart := range []string{"courier", "blog"} {
			pkg := filepath.Join(out, "charts", chart+"-"+chartVersion+".tgz")
			var meta struct{ Version, AppVersion string }
			if err := yaml.Unmarshal([]byte(run(t, helmBin, "show", "chart", pkg)), &meta); err != nil {
				t.Fatal(err)
			}
			if meta.Version != chartVersion || meta.AppVersion != version {
				t.Errorf("%s: version %q appVersion %q, want %q and %q", chart, meta.Version, meta.AppVersion, chartVersion, version)
			}
			rendered := run(t, helmBin, "template", chart, pkg)
			want := "ghcr.io/courier-dev/" + map[string]string{"courier": "courier-operator", "blog": "gateway"}[chart] + ":" + version
			if !strings.Contains(rendered, want) {
				t.Errorf("the packaged %s chart does not default to image %s", chart, want)
			}
		}
	})

	t.Run("release notes and checksums", func(t *testing.T) {
		notes, err := os.ReadFile(filepath.Join(out, "CHANGELOG.md"))
		if err != nil {
			t.Fatal(err)
		}
		// The notes list commits, not merges (changelog.sh), so the
		// newest non-merge commit's subject must be there.
		subject := strings.TrimSpace(run(t, "git", "log", "-1", "--no-merges", "--format=%s", revision))
		if _, rest, ok := strings.Cut(subject, ": "); ok {
			subject = rest
		}
		if !strings.HasPrefix(string(notes), "# Courier "+version) || !strings.Contains(string(notes), subject) {
			t.Errorf("CHANGELOG.md lacks the title or the newest commit's subject %q:\n%s", subject, notes)
		}
		sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
		if len(lines) != len(machines)+2 {
			t.Errorf("SHA256SUMS has %d lines, want %d (binaries and charts)", len(lines), len(machines)+2)
		}
		for _, line := range lines {
			sum, name, _ := strings.Cut(line, "  ")
			data, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
				t.Errorf("SHA256SUMS is wrong for %s", name)
			}
		}
	})
}

func TestReleaseDryRunRefusesAVersionThatIsNotSemver(t *testing.T) {
	cmd := exec.Command("make", "--no-print-directory", "release-dry-run", "VERSION=1.2", "RELEASE_DIR="+t.TempDir(), "HELM="+helm(t))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "VERSION 1.2 is not a v-prefixed semantic version") {
		t.Fatalf("want a refusal naming VERSION, got %v:\n%s", err, out)
	}
}

func elfMachine(t *testing.T, path string) elf.Machine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return elfMachineOf(t, data)
}

func elfMachineOf(t *testing.T, data []byte) elf.Machine {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	return f.Machine
}

// fileFromImage returns the file at /name in the image's last layer.
func fileFromImage(t *testing.T, img v1.Image, name string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("image layers: %v (%d)", err, len(layers))
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("the image has no /%s", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

// untar extracts an OCI archive into a new directory.
func untar(t *testing.T, archive string) string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatalf("read %s: %v", archive, err)
		}
		target := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q leaves the directory", archive, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
