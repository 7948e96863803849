using System.Text.Json;
using Azure;
using Azure.Storage.Queues.Models;

namespace Squash.LocalHost;

/// <summary>
/// The Functions host's queue listener for one queue function on one builder instance. It receives up to batchSize
/// messages, invokes the function for each (concurrently), and receives again once no more than newBatchThreshold are
/// still running; an empty queue makes it back off from 100 ms up to maxPollingInterval. Each message:
/// <list type="bullet">
/// <item>is received invisible for the lease (the host's 10 minutes), renewed at half-time while its invocation runs,
/// so a long invocation is never delivered twice meanwhile;</item>
/// <item>on 2xx is deleted;</item>
/// <item>on failure (non-2xx, timeout, a dead instance) is made visible again after host.json visibilityTimeout, or, when
/// this was its maxDequeueCount-th delivery, moved to "&lt;queue&gt;-poison";</item>
/// <item>delivered more than maxDequeueCount times (an earlier attempt died with its host) goes to the poison queue
/// without being invoked.</item>
/// </list>
/// </summary>
internal sealed class QueueTriggerListener(QueueTriggerHost host, QueueFunction function, InstanceSession session)
{
    /// <summary>How long completing a message (delete, retry, poison) may take, shutdown or not.</summary>
    private static readonly TimeSpan CompletionDeadline = TimeSpan.FromSeconds(30);

    public async Task RunAsync()
    {
        var processing = new List<Task>();
        var backoff = QueueTriggerHost.MinimumPollingInterval;
        var ct = session.Stopping;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                if (!session.BeginReceive()) break;
                QueueMessage[] batch = [];
                try
                {
                    // Not cancelled midway: a receive cut off after the service dequeued would hide its messages for a whole lease.
                    // Their leases run from no earlier than this moment.
                    long leasedFrom = System.Diagnostics.Stopwatch.GetTimestamp();
                    batch = (await function.Queue.ReceiveMessagesAsync(host.Settings.BatchSize, host.Lease, CancellationToken.None).ConfigureAwait(false)).Value ?? [];
                    if (ct.IsCancellationRequested)
                    {
                        // Stopped while receiving: the messages go back visible at once.
                        foreach (var message in batch) processing.Add(CompleteAsync(() => GiveBackAsync(message.MessageId, message.PopReceipt)));
                        break;
                    }
                    // Each invocation takes its slot on the instance before this returns (the recycle check relies on it).
                    foreach (var message in batch) processing.Add(ProcessAsync(message, leasedFrom));
                }
                catch (RequestFailedException e) when (e.Status == 404) { } // no queue yet: same as empty
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // Whatever it is, the listener keeps listening: a dead listener on a live instance would stall its queue.
                    host.Report($"queue {function.QueueName}: receive failed ({e.Message.Split('\n')[0]}); retrying");
                }
                finally
                {
                    session.EndReceive();
                }
                if (batch.Length == 0)
                {
                    try { await Task.Delay(backoff, ct).ConfigureAwait(false); } catch (OperationCanceledException) { break; }
                    backoff = TimeSpan.FromTicks(Math.Min(host.MaxPollingInterval.Ticks, backoff.Ticks * 2));
                    continue;
                }
                backoff = QueueTriggerHost.MinimumPollingInterval;
                while (processing.Count > host.NewBatchThreshold)
                    processing.Remove(await Task.WhenAny(processing).ConfigureAwait(false));
                processing.RemoveAll(t => t.IsCompleted);
            }
        }
        finally
        {
            await Task.WhenAll(processing).ConfigureAwait(false);
        }
    }

    private async Task ProcessAsync(QueueMessage message, long leasedFrom)
    {
        try
        {
            await InvokeAndCompleteAsync(message, leasedFrom).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Never expected; the message reappears when its lease ends, and the listener goes on.
            host.Report($"queue {function.QueueName}: message {message.MessageId} for {function.Function}: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
        }
    }

    private async Task InvokeAndCompleteAsync(QueueMessage message, long leasedFrom)
    {
        var instance = session.Instance;
        var settings = host.Settings;
        if (message.DequeueCount > settings.MaxDequeueCount)
        {
            await CompleteAsync(() => PoisonAsync(message, message.PopReceipt, $"delivered {message.DequeueCount} times (maxDequeueCount {settings.MaxDequeueCount}) without an outcome")).ConfigureAwait(false);
            return;
        }
        // Synchronous up to here: the slot is taken before the listener leaves its receive section.
        if (!instance.TryAcquire(int.MaxValue))
        {
            await CompleteAsync(() => FailAsync(message, message.PopReceipt, "the instance had stopped")).ConfigureAwait(false);
            return;
        }
        var receipt = new Receipt(message.PopReceipt);
        using var renewing = new CancellationTokenSource();
        var renewal = RenewAsync(message.MessageId, receipt, leasedFrom, renewing.Token);
        bool succeeded = false;
        string outcome;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(session.Stopping);
        deadline.CancelAfter(host.FunctionTimeout);
        try
        {
            var invocationId = Guid.NewGuid();
            using var request = QueueInvocation.Request(instance.BaseAddress, function.Function,
                QueueInvocation.Body(function.Function, function.BindingName, message, DateTime.UtcNow, Guid.NewGuid()), invocationId);
            using var response = await host.Http.SendAsync(request, deadline.Token).ConfigureAwait(false);
            instance.AddStorage(response.Headers);
            var text = await response.Content.ReadAsStringAsync(deadline.Token).ConfigureAwait(false);
            succeeded = response.IsSuccessStatusCode;
            outcome = $"HTTP {(int)response.StatusCode}";
            foreach (var line in HandlerLogs(text)) host.LogInvocation(instance, $"{function.Function} {invocationId}: {line}");
        }
        catch (OperationCanceledException) when (host.Stopping.IsCancellationRequested)
        {
            // Shutting down: the message goes back visible at once rather than after the lease.
            outcome = "the local host stopped";
            await CompleteAsync(() => GiveBackAsync(message.MessageId, receipt.PopReceipt)).ConfigureAwait(false);
            return;
        }
        catch (OperationCanceledException) when (!session.Stopping.IsCancellationRequested)
        {
            outcome = $"timed out after {host.FunctionTimeout} (host.json functionTimeout)";
            // As the Functions host restarts a worker that overran: the instance is replaced.
            host.Discard(session, $"a {function.Function} invocation {outcome}");
        }
        catch (OperationCanceledException)
        {
            outcome = "its instance was stopped";
        }
        catch (HttpRequestException e)
        {
            outcome = $"the instance failed ({e.Message})";
            host.Discard(session, $"it failed during a {function.Function} invocation ({e.Message})");
        }
        finally
        {
            instance.Release();
            renewing.Cancel();
            await renewal.ConfigureAwait(false);
        }
        host.LogInvocation(instance, $"{function.Function} message {message.MessageId} (delivery {message.DequeueCount}): {(succeeded ? "succeeded" : "failed")}, {outcome}");
        await CompleteAsync(() => succeeded
            ? QueueTriggerHost.DeleteAsync(function.Queue, message.MessageId, receipt.PopReceipt, CancellationToken.None)
            : FailAsync(message, receipt.PopReceipt, outcome)).ConfigureAwait(false);
    }

    /// <summary>A failed delivery: retried after visibilityTimeout, or poisoned when it was the last one allowed.</summary>
    private Task FailAsync(QueueMessage message, string popReceipt, string outcome) =>
        message.DequeueCount >= host.Settings.MaxDequeueCount
            ? PoisonAsync(message, popReceipt, $"failed {message.DequeueCount} times (maxDequeueCount {host.Settings.MaxDequeueCount}); last: {outcome}")
            : RetryLaterAsync(message.MessageId, popReceipt, host.Settings.VisibilityTimeout);

    private async Task PoisonAsync(QueueMessage message, string popReceipt, string why)
    {
        await QueueTriggerHost.MoveToPoisonAsync(function, message.Body, message.MessageId, popReceipt, CancellationToken.None).ConfigureAwait(false);
        host.Report($"queue {function.QueueName}: message {message.MessageId} for {function.Function} moved to {function.PoisonName ?? "nowhere (no poison queue)"}: {why}");
    }

    private async Task RetryLaterAsync(string id, string popReceipt, TimeSpan delay)
    {
        try
        {
            await function.Queue.UpdateMessageAsync(id, popReceipt, visibilityTimeout: delay).ConfigureAwait(false);
        }
        catch (RequestFailedException e) when (e.Status == 404 || e.ErrorCode == "PopReceiptMismatch") { }
    }

    private Task GiveBackAsync(string id, string popReceipt) => RetryLaterAsync(id, popReceipt, TimeSpan.Zero);

    /// <summary>Runs a completion step; a storage failure is reported and the message left to reappear after its lease.</summary>
    private async Task CompleteAsync(Func<Task> step)
    {
        try
        {
            await step().WaitAsync(CompletionDeadline).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RequestFailedException or HttpRequestException or TimeoutException or AggregateException)
        {
            host.Report($"queue {function.QueueName}: could not complete a message ({e.Message.Split('\n')[0]}); it reappears when its lease ends");
        }
    }

    /// <summary>
    /// Keeps the message invisible while its invocation runs: the lease is extended at half-time, counted from when the
    /// lease being extended began (the receive, then each update as it was sent), so that a late start or a slow call
    /// does not eat into the half lease of margin.
    /// </summary>
    private async Task RenewAsync(string id, Receipt receipt, long leasedFrom, CancellationToken ct)
    {
        var retry = TimeSpan.Zero;
        while (true)
        {
            try
            {
                var wait = retry > TimeSpan.Zero ? retry : host.Lease / 2 - System.Diagnostics.Stopwatch.GetElapsedTime(leasedFrom);
                if (wait > TimeSpan.Zero) await Task.Delay(wait, ct).ConfigureAwait(false);
                long sent = System.Diagnostics.Stopwatch.GetTimestamp();
                var updated = await function.Queue.UpdateMessageAsync(id, receipt.PopReceipt, visibilityTimeout: host.Lease, cancellationToken: ct).ConfigureAwait(false);
                receipt.PopReceipt = updated.Value.PopReceipt;
                leasedFrom = sent;
                retry = TimeSpan.Zero;
            }
            catch (OperationCanceledException) { return; }
            catch (RequestFailedException e) when (e.Status == 404 || e.ErrorCode == "PopReceiptMismatch") { return; } // gone or taken over
            catch (Exception e) when (e is RequestFailedException or HttpRequestException)
            {
                // Try again sooner: the lease is running out.
                var last = retry > TimeSpan.Zero ? retry : host.Lease / 2;
                retry = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond * 100, last.Ticks / 2));
            }
        }
    }

    /// <summary>The "Logs" of a custom-handler response (the host writes them to the invocation's log); anything else is ignored.</summary>
    private static IEnumerable<string> HandlerLogs(string body)
    {
        List<string> lines = [];
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
                foreach (var p in doc.RootElement.EnumerateObject())
                    if (p.Name.Equals("Logs", StringComparison.OrdinalIgnoreCase) && p.Value.ValueKind == JsonValueKind.Array)
                        lines.AddRange(p.Value.EnumerateArray().Select(l => l.ValueKind == JsonValueKind.String ? l.GetString()! : l.GetRawText()));
        }
        catch (JsonException) { }
        return lines;
    }

    /// <summary>The message's current pop receipt (each lease renewal issues a new one).</summary>
    private sealed class Receipt(string popReceipt)
    {
        private string _popReceipt = popReceipt;
        public string PopReceipt { get => Volatile.Read(ref _popReceipt); set => Volatile.Write(ref _popReceipt, value); }
    }
}
