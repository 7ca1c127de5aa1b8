package kind

import (
	"encoding/json"
	"fmt"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
)

// The prometheus-operator's kinds. They exist only where its CRDs are
// installed, so the controller handles them apart from the kinds it always
// owns (see the controller's monitoring.go).
var (
	PodMonitor = Object{
		Kind:    monitoringv1.PodMonitorsKind,
		Owned:   ownedDocument(monitoringv1.SchemeGroupVersion.WithKind(monitoringv1.PodMonitorsKind)),
		New:     func() client.Object { return &monitoringv1.PodMonitor{} },
		NewList: func() client.ObjectList { return &monitoringv1.PodMonitorList{} },
	}
	PrometheusRule = Object{
		Kind:    monitoringv1.PrometheusRuleKind,
		Owned:   ownedDocument(monitoringv1.SchemeGroupVersion.WithKind(monitoringv1.PrometheusRuleKind)),
		New:     func() client.Object { return &monitoringv1.PrometheusRule{} },
		NewList: func() client.ObjectList { return &monitoringv1.PrometheusRuleList{} },
	}
)

// Document is the apply configuration of a kind that has no generated ones:
// the prometheus-operator publishes its API types as a module of their own,
// its apply configurations only with its client, which the Go module proxy
// does not serve. It holds the object's fields as the JSON of the typed
// object gives them, so builders stay typed (see NewDocument).
type Document struct {
	Object map[string]any
}

// NewDocument returns the apply configuration of obj, a typed object of a
// kind, with the fields its JSON has, less those an apply must not send:
// metadata.creationTimestamp (null) and status (a subresource).
func NewDocument(obj client.Object) (*Document, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %T: %w", obj, err)
	}
	delete(m, "status")
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	return &Document{Object: m}, nil
}

// IsApplyConfiguration marks Document as an apply configuration.
func (d *Document) IsApplyConfiguration() {}

// GetName is the object's name.
func (d *Document) GetName() *string { return d.field("metadata", "name") }

// GetNamespace is the object's namespace.
func (d *Document) GetNamespace() *string { return d.field("metadata", "namespace") }

// GetKind is the object's kind.
func (d *Document) GetKind() *string { return d.field("kind") }

// GetAPIVersion is the object's API version.
func (d *Document) GetAPIVersion() *string { return d.field("apiVersion") }

func (d *Document) field(path ...string) *string {
	s, ok, _ := unstructured.NestedString(d.Object, path...)
	if !ok {
		return nil
	}
	return ptr.To(s)
}

// MarshalJSON sends the fields as they are.
func (d *Document) MarshalJSON() ([]byte, error) { return json.Marshal(d.Object) }

// UnmarshalJSON takes the API server's answer to an apply.
func (d *Document) UnmarshalJSON(data []byte) error {
	d.Object = nil
	return json.Unmarshal(data, &d.Object)
}

// ownedDocument is Owned for the kind gvk applied as a Document: the fields
// of obj that fieldOwner's apply entry in managedFields lists, with the
// object's identity, as client-go's generated Extract functions give them.
//
// Without the kind's schema the fields are read with a deduced one: maps
// (labels, spec) are split field by field like the API server does, lists
// and maps the API server keeps atomic (label selectors) are taken whole. The operator sets every list of these objects in full, so
// a list it owns holds only its own items, unless another manager adds to
// one (a second owner reference, say); the list then reads as changed and
// is applied again on every reconcile, with no harm but the writes.
func ownedDocument(gvk schema.GroupVersionKind) func(client.Object, string) (runtime.ApplyConfiguration, error) {
	return func(obj client.Object, fieldOwner string) (runtime.ApplyConfiguration, error) {
		return extractDocument(gvk, obj, fieldOwner)
	}
}

func extractDocument(gvk schema.GroupVersionKind, obj client.Object, fieldOwner string) (runtime.ApplyConfiguration, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %T: %w", obj, err)
	}
	out := map[string]any{}
	for _, e := range obj.GetManagedFields() {
		if e.Manager != fieldOwner || e.Operation != "Apply" || e.Subresource != "" || e.FieldsV1 == nil {
			continue
		}
		set := &fieldpath.Set{}
		if err := set.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, fmt.Errorf("read managed fields of %s: %w", obj.GetName(), err)
		}
		tv, err := typed.DeducedParseableType.FromUnstructured(m)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", obj.GetName(), err)
		}
		leaves := set.Leaves()
		if owned, ok := tv.ExtractItems(leaves).AsValue().Unstructured().(map[string]any); ok {
			out = owned
		}
		// A map the schema makes atomic (a label selector) is one leaf,
		// which the deduced schema, taking it for a map of fields, would
		// extract empty: take it whole.
		leaves.Iterate(func(p fieldpath.Path) {
			fields := make([]string, 0, len(p))
			for _, pe := range p {
				if pe.FieldName == nil {
					return // inside a list, which is taken whole
				}
				fields = append(fields, *pe.FieldName)
			}
			if v, ok, _ := unstructured.NestedFieldNoCopy(m, fields...); ok {
				if _, isMap := v.(map[string]any); isMap {
					_ = unstructured.SetNestedField(out, runtime.DeepCopyJSONValue(v), fields...)
				}
			}
		})
		break
	}
	// Typed objects read from the API server may come without their kind.
	out["apiVersion"] = gvk.GroupVersion().String()
	out["kind"] = gvk.Kind
	meta, _ := out["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		out["metadata"] = meta
	}
	meta["name"] = obj.GetName()
	meta["namespace"] = obj.GetNamespace()
	return &Document{Object: out}, nil
}
