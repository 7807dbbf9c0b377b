// gitops-health: how GitOps tools judge an object's health, computed by their real code.
//
//	gitops-health kstatus            kstatus' status.Compute (Flux): Current / InProgress / Failed / ...
//	gitops-health argocd-lua SCRIPT  an Argo CD health script in gopher-lua, Argo CD's Lua VM
//
// Objects come on stdin (a JSON object or a list of them); answers go to stdout as a JSON list of
// {"status": ..., "message": ...}. Built and cached by hack/gitops-health.sh.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type answer struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: gitops-health kstatus | argocd-lua SCRIPT  (objects as JSON on stdin)"))
	}
	objs := readObjects()
	out := make([]answer, 0, len(objs))
	switch os.Args[1] {
	case "kstatus":
		for _, obj := range objs {
			res, err := status.Compute(&unstructured.Unstructured{Object: obj})
			if err != nil {
				fail(err)
			}
			out = append(out, answer{Status: res.Status.String(), Message: res.Message})
		}
	case "argocd-lua":
		if len(os.Args) != 3 {
			fail(fmt.Errorf("argocd-lua needs the script's path"))
		}
		script, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err)
		}
		for _, obj := range objs {
			out = append(out, runLua(string(script), obj))
		}
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

// readObjects decodes with utiljson: whole numbers become int64, as the API machinery decodes them
// (kstatus reads metadata.generation as an int64 and refuses a float).
func readObjects() []map[string]interface{} {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var objs []map[string]interface{}
	if err := utiljson.Unmarshal(raw, &objs); err != nil {
		var one map[string]interface{}
		if err2 := utiljson.Unmarshal(raw, &one); err2 != nil {
			fail(fmt.Errorf("stdin is neither a JSON object nor a list of them: %v", err2))
		}
		objs = []map[string]interface{}{one}
	}
	return objs
}

// runLua runs a health script the way Argo CD does: a fresh VM, the object as the global `obj`, and the
// table the script returns read for `status` and `message`.
func runLua(script string, obj map[string]interface{}) answer {
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		fail(fmt.Errorf("lua: %v", err))
	}
	ret := L.Get(-1)
	table, ok := ret.(*lua.LTable)
	if !ok {
		fail(fmt.Errorf("lua: the script returned %s, not a table", ret.Type().String()))
	}
	return answer{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
}

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.RawSetString(k, toLua(L, x[k]))
		}
		return t
	default:
		fail(fmt.Errorf("unsupported JSON value %T", v))
		return lua.LNil
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gitops-health:", err)
	os.Exit(2)
}
