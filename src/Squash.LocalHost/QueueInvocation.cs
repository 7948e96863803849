using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Azure.Storage.Queues.Models;

namespace Squash.LocalHost;

/// <summary>
/// The request the Functions host sends a custom handler for one queue message: <c>POST /{function}</c> (no route
/// prefix) with a JSON body of <c>Data</c> (the trigger binding's value) and <c>Metadata</c> (the message's properties
/// and <c>sys</c>). The host serializes with Newtonsoft, and two of its habits are kept here because handlers meet them
/// on Azure: a string trigger value is JSON-encoded a second time (<c>Data.task</c> is the JSON text of the message
/// text), and every metadata primitive is sent as its JSON text (<c>"DequeueCount": "1"</c>, <c>"Id": "\"…\""</c>).
/// </summary>
public static class QueueInvocation
{
    /// <summary>What the local host says it is (the X-Azure-Functions-HostVersion and User-Agent headers).</summary>
    public const string HostVersion = "4.0.0-squash-local";

    // Newtonsoft escapes only what JSON requires (a quote as \", not \u0022); the relaxed encoder does the same,
    // so the handler sees the characters the host would send.
    private static readonly JsonSerializerOptions Newtonsoftish = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The JSON body for <paramref name="message"/> delivered to <paramref name="function"/>'s trigger binding.</summary>
    public static string Body(string function, string bindingName, QueueMessage message, DateTime utcNow, Guid randGuid)
    {
        var metadata = new JsonObject
        {
            ["DequeueCount"] = JsonText(message.DequeueCount),
            ["ExpirationTime"] = JsonText(message.ExpiresOn),
            ["Id"] = JsonText(message.MessageId),
            ["InsertionTime"] = JsonText(message.InsertedOn),
            ["NextVisibleTime"] = JsonText(message.NextVisibleOn),
            ["PopReceipt"] = JsonText(message.PopReceipt),
            ["sys"] = new JsonObject
            {
                ["MethodName"] = function,
                ["UtcNow"] = utcNow.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ss.FFFFFFFZ", CultureInfo.InvariantCulture),
                ["RandGuid"] = randGuid.ToString(),
            },
        };
        var body = new JsonObject
        {
            ["Data"] = new JsonObject { [bindingName] = JsonSerializer.Serialize(message.MessageText, Newtonsoftish) },
            ["Metadata"] = metadata,
        };
        return body.ToJsonString(Newtonsoftish);
    }

    /// <summary>The HTTP request to an instance at <paramref name="instance"/>; the invocation id goes in a header, as the host sends it.</summary>
    public static HttpRequestMessage Request(Uri instance, string function, string body, Guid invocationId)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(instance, "/" + Uri.EscapeDataString(function)))
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TryAddWithoutValidation("X-Azure-Functions-InvocationId", invocationId.ToString());
        request.Headers.TryAddWithoutValidation("X-Azure-Functions-HostVersion", HostVersion);
        request.Headers.TryAddWithoutValidation("User-Agent", "Azure-Functions-Host/" + HostVersion);
        return request;
    }

    // The JSON text of a primitive, as Newtonsoft writes it (dates ISO 8601 with offset, strings quoted).
    private static string JsonText(long value) => value.ToString(CultureInfo.InvariantCulture);
    private static string JsonText(string? value) => value is null ? "null" : JsonSerializer.Serialize(value, Newtonsoftish);
    private static string JsonText(DateTimeOffset? value) =>
        value is { } v ? "\"" + v.ToString("yyyy-MM-ddTHH:mm:ss.FFFFFFFzzz", CultureInfo.InvariantCulture) + "\"" : "null";
}
