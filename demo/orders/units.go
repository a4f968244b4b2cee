package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var suffixes = []struct {
	s string
	m float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// parseSize reads a Kubernetes-style quantity ("64Mi", "1.5Gi", "800M") or a plain byte count,
// bounded by max.
func parseSize(name, text string, max int64) (int64, error) {
	t := strings.TrimSpace(text)
	mult := 1.0
	for _, sfx := range suffixes {
		if strings.HasSuffix(t, sfx.s) {
			t, mult = strings.TrimSuffix(t, sfx.s), sfx.m
			break
		}
	}
	if len(t) == 0 || len(t) > 32 {
		return 0, fmt.Errorf("%s %q: expected a size such as 64Mi, at most %d bytes", name, text, max)
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v*mult > float64(max) {
		return 0, fmt.Errorf("%s %q: expected a size such as 64Mi, at most %d bytes", name, text, max)
	}
	return int64(v * mult), nil
}
