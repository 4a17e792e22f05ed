package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// decode reads the value stored at key, below the history prefix, as an event. Only what Recorder.put
// writes is one: JSON with the ID that names its key and a time. Anything else, JSON null included, is an
// error naming the key, so that garbage is reported instead of listed as an empty event.
func decode(prefix string, key, value []byte) (Event, error) {
	var ev Event
	err := json.Unmarshal(value, &ev)
	switch {
	case err != nil:
	case ev.ID == "" || ev.ID != strings.TrimPrefix(string(key), prefix):
		err = fmt.Errorf("its id %q does not name its key", truncate(ev.ID, 80))
	case ev.Time.IsZero():
		err = errors.New("it has no time")
	}
	if err != nil {
		// A JSON error quotes the bad input, which may be as large as a value: keep the message short.
		return Event{}, fmt.Errorf("%s is not an event: %s", truncate(string(key), 200), truncate(err.Error(), 200))
	}
	return ev, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
