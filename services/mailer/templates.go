package main

import (
	"embed"
	"fmt"
	"path"
	"strings"
	"text/template"

	"github.com/courier-dev/courier/services/internal/mailjob"
)

// templateFS holds one plain-text template per job template name. Each file
// defines a "subject" and a "body" template, so the two can never drift apart
// the way two files per e-mail could.
//
//go:embed templates/*.txt
var templateFS embed.FS

// Templates renders the e-mail templates by name.
type Templates struct {
	byName map[string]*template.Template
}

// LoadTemplates parses every embedded template. missingkey=error makes a job
// whose data lacks a field fail to render instead of mailing "<no value>".
func LoadTemplates() (*Templates, error) {
	files, err := templateFS.ReadDir("templates")
	if err != nil {
		return nil, fmt.Errorf("read embedded templates: %w", err)
	}
	t := &Templates{byName: make(map[string]*template.Template, len(files))}
	for _, f := range files {
		name := strings.TrimSuffix(f.Name(), ".txt")
		tmpl, err := template.New(name).Option("missingkey=error").ParseFS(templateFS, path.Join("templates", f.Name()))
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		for _, part := range []string{"subject", "body"} {
			if tmpl.Lookup(part) == nil {
				return nil, fmt.Errorf("template %s: no %q defined", name, part)
			}
		}
		t.byName[name] = tmpl
	}
	return t, nil
}

// Render returns the subject and body of template name filled with data.
// An unknown template or missing data is an error the job can never recover
// from; the caller dead-letters it.
func (t *Templates) Render(name mailjob.Template, data map[string]string) (subject, body string, err error) {
	tmpl, ok := t.byName[string(name)]
	if !ok {
		return "", "", fmt.Errorf("unknown template %q", name)
	}
	var s, b strings.Builder
	if err := tmpl.ExecuteTemplate(&s, "subject", data); err != nil {
		return "", "", fmt.Errorf("render %s subject: %w", name, err)
	}
	if err := tmpl.ExecuteTemplate(&b, "body", data); err != nil {
		return "", "", fmt.Errorf("render %s body: %w", name, err)
	}
	return s.String(), b.String(), nil
}

// Names lists the known templates.
func (t *Templates) Names() []mailjob.Template {
	names := make([]mailjob.Template, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, mailjob.Template(n))
	}
	return names
}
