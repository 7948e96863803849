using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Squash.Infra.Tests;

/// <summary>
/// A value the evaluator cannot know before a deployment runs (a reference to a deployed resource, a key, a token):
/// kept as text, so that assertions can still see where it came from.
/// </summary>
public sealed record Unknown(string Text)
{
    public override string ToString() => $"<{Text}>";
}

/// <summary>
/// Evaluates the compiled ARM template offline, for the subset of the template language Bicep emits for infra/:
/// parameters with their defaults (or given values), variables with copy loops, module deployments with copy loops and
/// conditions, nested templates with their own parameters, and the functions the files use. Runtime values
/// (reference, list*, the deployment's ids) stay <see cref="Unknown"/>. What comes out is each module's resources with
/// their properties as Azure would receive them for those parameters: concrete app settings, role assignments, names.
/// </summary>
public sealed class ArmTemplate
{
    private readonly JsonObject _template;
    private readonly Dictionary<string, object?> _parameters = new();
    private readonly Dictionary<string, object?> _variables = new();
    private readonly Dictionary<string, int> _copyIndex = new();
    private readonly Dictionary<string, object?> _lambdaScope = new();

    public ArmTemplate(JsonObject template, IReadOnlyDictionary<string, object?>? parameters = null)
    {
        _template = template;
        foreach (var (name, declaration) in template["parameters"]?.AsObject() ?? [])
        {
            if (parameters is not null && parameters.TryGetValue(name, out var given)) _parameters[name] = given;
            else if (declaration!.AsObject().TryGetPropertyValue("defaultValue", out var d)) _parameters[name] = Evaluate(d);
            else throw new InvalidOperationException($"parameter '{name}' has no default and was not given");
        }
    }

    public JsonObject Json => _template;

    public object? Parameter(string name) => _parameters[name];

    /// <summary>The template's resources as deployed: loops expanded (one entry per copy), conditions applied, values evaluated.</summary>
    public IReadOnlyList<Deployed> Resources()
    {
        var list = new List<Deployed>();
        var resources = _template["resources"] switch
        {
            JsonArray a => a.Select(r => r!.AsObject()),
            JsonObject o => o.Select(p => p.Value!.AsObject()),
            _ => [],
        };
        foreach (var r in resources)
        {
            if (r["existing"]?.GetValue<bool>() == true) continue;
            if (r["copy"] is JsonObject copy)
            {
                var name = copy["name"]!.GetValue<string>();
                long count = Convert.ToInt64(Evaluate(copy["count"]));
                for (int i = 0; i < count; i++)
                {
                    _copyIndex[name] = i;
                    _copyIndex[""] = i;
                    AddIfDeployed(r, list);
                }
                _copyIndex.Remove(name);
                _copyIndex.Remove("");
            }
            else AddIfDeployed(r, list);
        }
        return list;
    }

    private void AddIfDeployed(JsonObject r, List<Deployed> list)
    {
        if (r["condition"] is { } condition && Evaluate(condition) is false) return;
        // A nested template's expressions belong to that template: they are evaluated below, with its own parameters.
        var properties = r["properties"] is JsonObject props
            ? props.Where(x => x.Key != "template").ToDictionary(x => x.Key, x => Evaluate(x.Value))
            : Evaluate(r["properties"]);
        var resource = new Deployed(r["type"]!.GetValue<string>(), Evaluate(r["name"])?.ToString() ?? "", properties, r, this);
        // A nested deployment's template is evaluated with the parameter values this loop iteration gives it.
        if (resource.Type == "Microsoft.Resources/deployments" && r["properties"]?["template"] is JsonObject nested)
        {
            var given = new Dictionary<string, object?>();
            foreach (var (name, p) in r["properties"]!["parameters"]?.AsObject() ?? [])
                // Usually { "value": … }; a conditional value is an expression that yields that object.
                given[name] = p is JsonObject o ? Evaluate(o["value"]) : ((Dictionary<string, object?>)Evaluate(p)!)["value"];
            resource = resource with { Nested = new ArmTemplate(nested, given) };
        }
        resource = resource with { Sku = Evaluate(r["sku"]), Kind = Evaluate(r["kind"]) as string, Tags = Evaluate(r["tags"]) };
        list.Add(resource);
    }

    /// <summary>The template's outputs, evaluated.</summary>
    public Dictionary<string, object?> Outputs() =>
        (_template["outputs"]?.AsObject() ?? []).ToDictionary(o => o.Key, o => Evaluate(o.Value!["value"]));

    public object? Variable(string name)
    {
        if (_variables.TryGetValue(name, out var known)) return known;
        var variables = _template["variables"]?.AsObject() ?? [];
        object? value;
        if (variables.TryGetPropertyValue(name, out var node)) value = Evaluate(node);
        else
        {
            var loop = variables["copy"]?.AsArray().FirstOrDefault(c => c!["name"]!.GetValue<string>() == name)
                ?? throw new InvalidOperationException($"no variable '{name}'");
            long count = Convert.ToInt64(Evaluate(loop["count"]));
            var items = new List<object?>();
            for (int i = 0; i < count; i++)
            {
                _copyIndex[name] = i;
                items.Add(Evaluate(loop["input"]));
            }
            _copyIndex.Remove(name);
            value = items;
        }
        return _variables[name] = value;
    }

    /// <summary>A JSON value of the template with every "[expression]" string in it evaluated.</summary>
    public object? Evaluate(JsonNode? node) => node switch
    {
        null => null,
        // Property names can be expressions too (a user-assigned identity's resource id, for one).
        JsonObject o => o.ToDictionary(p => p.Key.StartsWith('[') ? Text(Evaluate(JsonValue.Create(p.Key))) : p.Key, p => Evaluate(p.Value)),
        JsonArray a => a.Select(Evaluate).ToList(),
        JsonValue v when v.TryGetValue<string>(out var s) => s.StartsWith('[') && s.EndsWith(']') && !s.StartsWith("[[")
            ? new Parser(s[1..^1]).ParseAll().Evaluate(this)
            : s.StartsWith("[[") ? s[1..] : s,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        JsonValue v when v.TryGetValue<long>(out var l) => l,
        JsonValue v => v.GetValue<double>(),
        _ => throw new NotSupportedException(node.ToJsonString()),
    };

    // ---- the expression language -------------------------------------------------------------------------------

    private abstract record Expr
    {
        public abstract object? Evaluate(ArmTemplate t);
    }

    private sealed record Literal(object? Value) : Expr
    {
        public override object? Evaluate(ArmTemplate t) => Value;
    }

    private sealed record Member(Expr Target, string Name) : Expr
    {
        public override object? Evaluate(ArmTemplate t) => Target.Evaluate(t) switch
        {
            Dictionary<string, object?> d => d.TryGetValue(Name, out var v) ? v
                : d.FirstOrDefault(p => string.Equals(p.Key, Name, StringComparison.OrdinalIgnoreCase)).Value,
            Unknown u => new Unknown($"{u.Text}.{Name}"),
            var other => throw new InvalidOperationException($"'.{Name}' on {other}"),
        };
    }

    private sealed record Index(Expr Target, Expr Key) : Expr
    {
        public override object? Evaluate(ArmTemplate t)
        {
            var target = Target.Evaluate(t);
            var key = Key.Evaluate(t);
            return (target, key) switch
            {
                (List<object?> list, long i) => list[(int)i],
                (Dictionary<string, object?> d, string k) => d[k],
                (Unknown u, _) => new Unknown($"{u.Text}[{key}]"),
                _ => throw new InvalidOperationException($"[{key}] on {target}"),
            };
        }
    }

    private sealed record Lambda(string[] Names, Expr Body)
    {
        public object? Invoke(ArmTemplate t, params object?[] args)
        {
            for (int i = 0; i < Names.Length; i++) t._lambdaScope[Names[i]] = args[i];
            return Body.Evaluate(t);
        }
    }

    private sealed record Call(string Name, Expr[] Args) : Expr
    {
        public override object? Evaluate(ArmTemplate t)
        {
            if (Name.Equals("lambda", StringComparison.OrdinalIgnoreCase))
                return new Lambda(Args[..^1].Select(a => (string)a.Evaluate(t)!).ToArray(), Args[^1]);
            if (Name.Equals("if", StringComparison.OrdinalIgnoreCase))
                return Args[0].Evaluate(t) is true ? Args[1].Evaluate(t) : Args[2].Evaluate(t);
            var a = Args.Select(x => x.Evaluate(t)).ToArray();
            return Name.ToLowerInvariant() switch
            {
                "parameters" => t._parameters[(string)a[0]!],
                "variables" => t.Variable((string)a[0]!),
                "lambdavariables" => t._lambdaScope[(string)a[0]!],
                "copyindex" => (long)(t._copyIndex[a.Length > 0 && a[0] is string loop ? loop : ""] + (a.Length > 0 && a[^1] is long offset ? offset : 0)),
                "format" => Format((string)a[0]!, a[1..]),
                "concat" => a.All(x => x is List<object?>) ? a.SelectMany(x => (List<object?>)x!).ToList() : string.Concat(a.Select(Text)),
                "createarray" => a.ToList(),
                "createobject" => Enumerable.Range(0, a.Length / 2).ToDictionary(i => (string)a[2 * i]!, i => a[2 * i + 1]),
                "union" => a.All(x => x is List<object?>) ? a.SelectMany(x => (List<object?>)x!).Distinct().ToList()
                    : a.Aggregate(new Dictionary<string, object?>(), (acc, x) => { foreach (var (k, v) in (Dictionary<string, object?>)x!) acc[k] = v; return acc; }),
                "range" => Enumerable.Range((int)(long)a[0]!, (int)(long)a[1]!).Select(i => (object?)(long)i).ToList(),
                "map" => ((List<object?>)a[0]!).Select(x => ((Lambda)a[1]!).Invoke(t, x)).ToList(),
                "filter" => ((List<object?>)a[0]!).Where(x => ((Lambda)a[1]!).Invoke(t, x) is true).ToList(),
                "toobject" => ((List<object?>)a[0]!).ToDictionary(x => (string)((Lambda)a[1]!).Invoke(t, x)!, x => a.Length > 2 ? ((Lambda)a[2]!).Invoke(t, x) : x),
                "items" => ((Dictionary<string, object?>)a[0]!).Select(p => (object?)new Dictionary<string, object?> { ["key"] = p.Key, ["value"] = p.Value }).ToList(),
                "join" => string.Join((string)a[1]!, ((List<object?>)a[0]!).Select(Text)),
                "length" => a[0] switch { List<object?> l => (long)l.Count, string s => (long)s.Length, Dictionary<string, object?> d => (long)d.Count, _ => throw new InvalidOperationException("length") },
                "empty" => a[0] switch { null => true, string s => s.Length == 0, List<object?> l => l.Count == 0, Dictionary<string, object?> d => d.Count == 0, _ => false },
                "equals" => Equals(a[0], a[1]),
                "not" => a[0] is false,
                "and" => a.All(x => x is true),
                "or" => a.Any(x => x is true),
                "greater" => Convert.ToInt64(a[0]) > Convert.ToInt64(a[1]),
                "less" => Convert.ToInt64(a[0]) < Convert.ToInt64(a[1]),
                "add" => (long)a[0]! + (long)a[1]!,
                "sub" => (long)a[0]! - (long)a[1]!,
                "mul" => (long)a[0]! * (long)a[1]!,
                "div" => (long)a[0]! / (long)a[1]!,
                "int" => Convert.ToInt64(a[0], CultureInfo.InvariantCulture),
                "string" => a[0] is Unknown u ? u : Text(a[0]),
                "bool" => a[0] is bool b ? b : bool.Parse((string)a[0]!),
                "tolower" => a[0] is string s ? s.ToLowerInvariant() : a[0],
                "true" => true,
                "false" => false,
                "null" => null,
                "uniquestring" => a.Any(x => x is Unknown) ? new Unknown("uniqueString") : UniqueString(a),
                "guid" => new Unknown("guid(" + string.Join(", ", a.Select(Text)) + ")"),
                "subscription" => new Dictionary<string, object?>
                {
                    ["id"] = "/subscriptions/00000000-0000-0000-0000-000000000000", ["subscriptionId"] = "00000000-0000-0000-0000-000000000000",
                    ["tenantId"] = "11111111-1111-1111-1111-111111111111",
                },
                "resourcegroup" => new Unknown("resourceGroup()"),
                "resourceid" or "subscriptionresourceid" or "extensionresourceid" or "tenantresourceid" => new Unknown($"{Name}({string.Join(", ", a.Select(Text))})"),
                "reference" => new Unknown($"reference({Text(a[0])})"),
                _ when Name.StartsWith("list", StringComparison.OrdinalIgnoreCase) => new Unknown($"{Name}({Text(a[0])})"),
                _ => throw new NotSupportedException($"ARM function {Name}() is not known to the test evaluator"),
            };
        }
    }

    private static string Text(object? v) => v switch
    {
        null => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        Unknown u => u.ToString(),
        _ => System.Text.Json.JsonSerializer.Serialize(v),
    };

    private static string Format(string format, object?[] args)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] == '{' && i + 1 < format.Length && char.IsDigit(format[i + 1]))
            {
                int end = format.IndexOf('}', i);
                sb.Append(Text(args[int.Parse(format[(i + 1)..end], CultureInfo.InvariantCulture)]));
                i = end;
            }
            else sb.Append(format[i]);
        }
        return sb.ToString();
    }

    /// <summary>A stand-in for uniqueString: 13 lower-case characters, the same for the same inputs.</summary>
    private static string UniqueString(object?[] a)
    {
        var hash = System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("|", a.Select(Text))));
        return string.Concat(hash.Take(7).Select(b => b.ToString("x2", CultureInfo.InvariantCulture)))[..13];
    }

    private sealed class Parser(string text)
    {
        private int _at;

        public Expr ParseAll()
        {
            var e = ParseExpr();
            Skip();
            if (_at != text.Length) throw new FormatException($"unexpected '{text[_at..]}' in [{text}]");
            return e;
        }

        private void Skip() { while (_at < text.Length && char.IsWhiteSpace(text[_at])) _at++; }

        private Expr ParseExpr()
        {
            var e = ParsePrimary();
            while (true)
            {
                Skip();
                if (_at < text.Length && text[_at] == '.')
                {
                    _at++;
                    e = new Member(e, Identifier());
                }
                else if (_at < text.Length && text[_at] == '[')
                {
                    _at++;
                    var key = ParseExpr();
                    Skip();
                    Expect(']');
                    e = new Index(e, key);
                }
                else return e;
            }
        }

        private Expr ParsePrimary()
        {
            Skip();
            char c = text[_at];
            if (c == '\'')
            {
                var sb = new StringBuilder();
                _at++;
                while (true)
                {
                    if (text[_at] == '\'')
                    {
                        if (_at + 1 < text.Length && text[_at + 1] == '\'') { sb.Append('\''); _at += 2; continue; }
                        _at++;
                        return new Literal(sb.ToString());
                    }
                    sb.Append(text[_at++]);
                }
            }
            if (char.IsDigit(c) || c == '-')
            {
                int start = _at++;
                while (_at < text.Length && char.IsDigit(text[_at])) _at++;
                return new Literal(long.Parse(text[start.._at], CultureInfo.InvariantCulture));
            }
            var name = Identifier();
            Skip();
            Expect('(');
            var args = new List<Expr>();
            Skip();
            if (text[_at] == ')') { _at++; return new Call(name, []); }
            while (true)
            {
                args.Add(ParseExpr());
                Skip();
                if (text[_at] == ',') { _at++; continue; }
                Expect(')');
                return new Call(name, args.ToArray());
            }
        }

        private string Identifier()
        {
            Skip();
            int start = _at;
            while (_at < text.Length && (char.IsLetterOrDigit(text[_at]) || text[_at] == '_')) _at++;
            if (start == _at) throw new FormatException($"expected a name at {_at} in [{text}]");
            return text[start.._at];
        }

        private void Expect(char c)
        {
            if (_at >= text.Length || text[_at] != c) throw new FormatException($"expected '{c}' at {_at} in [{text}]");
            _at++;
        }
    }
}

/// <summary>One deployed resource: its evaluated name and properties (and, for a module, its evaluated template).</summary>
public sealed record Deployed(string Type, string Name, object? Properties, JsonObject Source, ArmTemplate Owner)
{
    public ArmTemplate? Nested { get; init; }
    public object? Sku { get; init; }
    public string? Kind { get; init; }
    public object? Tags { get; init; }

    public Dictionary<string, object?> Props => Properties as Dictionary<string, object?> ?? [];

    /// <summary>The value at a dotted path of the properties (null when a step is missing).</summary>
    public object? At(string path)
    {
        object? v = Properties;
        foreach (var step in path.Split('.'))
            v = v is Dictionary<string, object?> d && d.TryGetValue(step, out var next) ? next : null;
        return v;
    }
}
