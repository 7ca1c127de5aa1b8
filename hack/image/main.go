// Command image builds a container image without a Docker engine and writes
// it as an image archive that `ctr images import` (and `docker load`) read.
// It is how the local node (hack/cluster) and `make demo` get their images on
// a machine with no engine and no registry:
//
//	go run ./hack/image -ref ghcr.io/courier-dev/gateway:dev -o gateway.tar \
//	    -file bin/gateway=/gateway -entrypoint /gateway -user 65532:65532
//
// Layers come from -layer (an existing tar, such as mmdebstrap's root file
// system) and -file (single files, one layer for all of them, added last).
// Every timestamp is zero, so the same inputs give the same image digest and
// a rebuild of an unchanged binary imports nothing new.
//
// With -format oci it writes a multi-platform image instead: an OCI image
// layout, as a tar (what `docker buildx build --output type=oci` writes),
// whose index holds one image per -platforms architecture, {arch} in the
// -file and -layer sources standing for each (make release-dry-run):
//
//	go run ./hack/image -format oci -platforms amd64,arm64 -ref ghcr.io/courier-dev/gateway:v1.2.3 \
//	    -o gateway.oci.tar -file 'dist/bin/linux_{arch}/gateway=/gateway' -entrypoint /gateway
//
// go-containerregistry does the image format (manifest, config, index,
// layout, digests); only the small tar of -file entries and the tar around
// the layout directory (the library writes layouts only as directories) are
// written here.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		ref        = fs.String("ref", "", "image reference to tag the image with (required)")
		out        = fs.String("o", "", "output archive (required)")
		entrypoint = fs.String("entrypoint", "", "entrypoint, arguments separated by commas")
		cmd        = fs.String("cmd", "", "default arguments, separated by commas")
		user       = fs.String("user", "", "user:group the process runs as")
		workdir    = fs.String("workdir", "", "working directory")
		arch       = fs.String("arch", "amd64", "architecture recorded in the image config (-format docker)")
		format     = fs.String("format", "docker", "docker: an image archive for ctr import and docker load, one platform (-arch); "+
			"oci: an OCI image layout as a tar whose index holds one image per -platforms entry")
		platforms = fs.String("platforms", "", "with -format oci: linux architectures separated by commas (amd64,arm64); "+
			"{arch} in -file and -layer sources is replaced by each")
		layers multi
		files  multi
		envs   multi
		labels multi
	)
	fs.Var(&layers, "layer", "a tar file to add as a layer (repeatable, in order)")
	fs.Var(&files, "file", "src=dst[:mode]: a file to add at dst (repeatable; one layer for all, added last)")
	fs.Var(&envs, "env", "K=V environment variable (repeatable)")
	fs.Var(&labels, "label", "K=V image label (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" || *out == "" {
		return errors.New("-ref and -o are required")
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		return fmt.Errorf("-ref %q: %w", *ref, err)
	}

	spec := imageSpec{
		layers: layers, files: files, envs: envs, labels: labels, oci: *format == "oci",
		entrypoint: split(*entrypoint), cmd: split(*cmd), user: *user, workdir: *workdir,
	}
	switch *format {
	case "docker":
		img, err := spec.build(*arch)
		if err != nil {
			return err
		}
		return writeDocker(tag, img, *out, stdout)
	case "oci":
		if *platforms == "" {
			return errors.New("-format oci needs -platforms")
		}
		return writeOCI(tag, spec, split(*platforms), *out, stdout)
	default:
		return fmt.Errorf("-format %q: want docker or oci", *format)
	}
}

// imageSpec is one image's content and configuration, built once per
// architecture.
type imageSpec struct {
	layers, files, envs, labels []string
	entrypoint, cmd             []string
	user, workdir               string
	oci                         bool // OCI media types rather than Docker's
}

func (s imageSpec) build(arch string) (v1.Image, error) {
	var layerOpts []tarball.LayerOption
	img := empty.Image
	if s.oci {
		layerOpts = append(layerOpts, tarball.WithMediaType(types.OCILayer))
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	forArch := func(p string) string { return strings.ReplaceAll(p, "{arch}", arch) }
	for _, l := range s.layers {
		l = forArch(l)
		layer, err := tarball.LayerFromFile(l, layerOpts...)
		if err != nil {
			return nil, fmt.Errorf("-layer %s: %w", l, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, fmt.Errorf("-layer %s: %w", l, err)
		}
	}
	if len(s.files) > 0 {
		files := make([]string, len(s.files))
		for i, f := range s.files {
			files[i] = forArch(f)
		}
		data, err := filesTar(files)
		if err != nil {
			return nil, err
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, layerOpts...)
		if err != nil {
			return nil, fmt.Errorf("-file layer: %w", err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, fmt.Errorf("-file layer: %w", err)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = s.entrypoint
	cf.Config.Cmd = s.cmd
	cf.Config.User = s.user
	cf.Config.WorkingDir = s.workdir
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, s.envs...)
	if len(s.labels) > 0 {
		cf.Config.Labels = labelMap(s.labels)
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

func labelMap(labels []string) map[string]string {
	m := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

func writeDocker(tag name.Tag, img v1.Image, out string, stdout io.Writer) error {
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s %s\n", tag, digest, out)
	return err
}

// writeOCI writes an index of one image per architecture, annotated with
// the image's labels (as buildx annotates an index), into an OCI layout and
// that layout as a tar at out.
func writeOCI(tag name.Tag, spec imageSpec, archs []string, out string, stdout io.Writer) error {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range archs {
		img, err := spec.build(arch)
		if err != nil {
			return fmt.Errorf("%s: %w", arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	if len(spec.labels) > 0 {
		idx = mutate.Annotations(idx, labelMap(spec.labels)).(v1.ImageIndex)
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".oci-layout-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.String(),
	})); err != nil {
		return fmt.Errorf("write index: %w", err)
	}
	tmp := out + ".tmp"
	if err := tarDir(dir, tmp); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s %s\n", tag, digest, out)
	return err
}

// tarDir writes the files under dir as a tar at out, in path order, with
// zero timestamps, so equal layouts give equal archives.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel) + "/", Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX})
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// filesTar writes the -file entries, with their parent directories, as one
// tar owned by root with zero timestamps, in a fixed order so equal inputs
// give an equal layer digest.
func filesTar(files []string) ([]byte, error) {
	type entry struct {
		dst  string
		mode int64
		data []byte
	}
	var entries []entry
	dirs := map[string]bool{}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(dst, "/") {
			return nil, fmt.Errorf("-file %q: want src=/absolute/dst[:mode]", f)
		}
		var mode int64 = 0o755
		if d, m, ok := strings.Cut(dst, ":"); ok {
			dst = d
			if _, err := fmt.Sscanf(m, "%o", &mode); err != nil {
				return nil, fmt.Errorf("-file %q: mode %q: %w", f, m, err)
			}
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("-file %q: %w", f, err)
		}
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
		entries = append(entries, entry{dst: dst, mode: mode, data: data})
	}
	// Sorted paths put every parent before its children.
	sortedDirs := slices.Sorted(maps.Keys(dirs))
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.dst, b.dst) })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range sortedDirs {
		hdr := &tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, e := range entries {
		hdr := &tar.Header{Name: strings.TrimPrefix(e.dst, "/"), Mode: e.mode, Size: int64(len(e.data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
