package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var dashboardPath = filepath.Join("..", "..", "config", "prometheus", "dashboards", "courier-app.json")

// dashboard is the part of a Grafana dashboard's JSON model the tests read.
type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
	// Templating holds the dashboard's variables ($namespace, $service).
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

// variable is a dashboard template variable.
type variable struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Query is a string or, in newer models, {"query": "..."}.
	Query      json.RawMessage `json:"query"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

// QueryString is the variable's query, whichever way the model spells it.
func (v variable) QueryString() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %w", v.Name, err)
	}
	return obj.Query, nil
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if len(d.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	return d
}

// templateRef matches Grafana's three spellings of a variable reference:
// ${name} or ${name:format}, $name and [[name]].
var templateRef = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expand replaces every variable reference in expr with its value in vars,
// and reports the names it found no value for.
func expand(expr string, vars map[string]string) (string, []string) {
	var unknown []string
	out := templateRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := templateRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := vars[name]
		if !ok {
			unknown = append(unknown, name)
			return ref
		}
		return v
	})
	return out, unknown
}
