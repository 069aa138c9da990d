// Package migrations is usher's PostgreSQL schema: goose migrations,
// embedded in the binary, that store/postgres applies and
// store/postgres/pgtest builds its template database from. A database
// made by any earlier version migrates forward; files are never edited
// once released, only added.
package migrations

import "embed"

// FS holds the migrations at its root.
//
//go:embed *.sql
var FS embed.FS
