// Command chgo drives etar's ClickHouse endpoint with clickhouse-go over HTTP, as Grafana
// does: ping, a parameterised GROUP BY on user_interactions, and a PrepareBatch insert of
// 1,000 rows read back, in a table of its own. It prints "ok: <what>" lines and exits 1 on
// the first failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8123", "host:port of the HTTP endpoint")
	user := flag.String("user", "default", "user")
	password := flag.String("password", "", "password")
	compression := flag.String("compression", "none", "none, lz4 or zstd")
	table := flag.String("table", "", "a table of the run's own (created and dropped)")
	flag.Parse()

	options := &clickhouse.Options{
		Addr:        []string{*addr},
		Protocol:    clickhouse.HTTP,
		Auth:        clickhouse.Auth{Database: "default", Username: *user, Password: *password},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second,
	}
	switch *compression {
	case "lz4":
		options.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	case "zstd":
		options.Compression = &clickhouse.Compression{Method: clickhouse.CompressionZSTD}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	conn, err := clickhouse.Open(options)
	if err != nil {
		fail("open: %v", err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		fail("ping: %v", err)
	}
	version, err := conn.ServerVersion()
	if err != nil {
		fail("server version: %v", err)
	}
	fmt.Printf("ok: ping (%s %s)\n", version.DisplayName, version.Version)

	bound := clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters{
		"since": "2000-01-01 00:00:00", "status": "SUCCESS"}))
	rows, err := conn.Query(bound, `SELECT event_type, count() AS events, uniqExact(user_id) AS users
		FROM user_interactions
		WHERE event_ts >= {since:DateTime64(3, 'UTC')} AND status = {status:String}
		GROUP BY event_type ORDER BY event_type`)
	if err != nil {
		fail("group by: %v", err)
	}
	groups := 0
	for rows.Next() {
		var kind string
		var events, users uint64
		if err := rows.Scan(&kind, &events, &users); err != nil {
			fail("group by scan: %v", err)
		}
		groups++
	}
	if err := rows.Err(); err != nil {
		fail("group by rows: %v", err)
	}
	rows.Close()
	fmt.Printf("ok: group by (%d groups)\n", groups)

	if err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id UInt64, name String,
		kind LowCardinality(String), score Nullable(Float64), tags Array(String),
		ts DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id`, *table)); err != nil {
		fail("create: %v", err)
	}
	defer func() { _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+*table) }()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+*table)
	if err != nil {
		fail("prepare batch: %v", err)
	}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 1000; i++ {
		var score *float64
		if i%3 != 0 {
			value := float64(i) / 2
			score = &value
		}
		if err := batch.Append(uint64(i), fmt.Sprintf("row-%d", i), []string{"a", "b"}[i%2],
			score, []string{"x", fmt.Sprint(i)}, start.Add(time.Duration(i)*time.Millisecond)); err != nil {
			fail("append: %v", err)
		}
	}
	if err := batch.Send(); err != nil {
		fail("send: %v", err)
	}
	var count, total uint64
	var last time.Time
	var name string
	if err := conn.QueryRow(ctx, fmt.Sprintf(
		"SELECT count(), sum(id), max(ts), argMax(name, id) FROM %s", *table)).Scan(
		&count, &total, &last, &name); err != nil {
		fail("read back: %v", err)
	}
	if count != 1000 || total != 499500 || name != "row-999" ||
		!last.Equal(start.Add(999*time.Millisecond)) {
		fail("read back: count=%d sum=%d last=%v name=%s", count, total, last, name)
	}
	fmt.Println("ok: batch of 1000 rows read back")
}
