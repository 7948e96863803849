using Squash.Cli.Commands;
using Squash.Storage;

namespace Squash.Cli.Tests;

/// <summary>Every credential form is hidden in what the CLI and the local host print; everything else stays readable.</summary>
public sealed class SecretRedactionTests
{
    [Theory]
    // Account key connection string (Azure, and Azurite's well-known key).
    [InlineData("azure:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleQ==;EndpointSuffix=core.windows.net",
        "azure:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net")]
    [InlineData("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=***;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1")]
    // SAS connection string: the whole token, whose parts hold '&' and '='.
    [InlineData("BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2024-08-04&ss=b&srt=co&sp=rl&se=2030-01-01&sig=c2lnbmF0dXJl%3D",
        "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=***")]
    [InlineData("sharedaccesssignature = sv=1&sig=c2ln; next", "sharedaccesssignature = ***; next")]
    // SAS in a URL: the whole query goes, whatever its parameters are called.
    [InlineData("azure:https://acct.blob.core.windows.net/squash?sv=2024-08-04&sp=r&sig=c2lnbmF0dXJl", "azure:https://acct.blob.core.windows.net/squash?***")]
    [InlineData("GET 'https://acct.blob.core.windows.net/squash/idx/current?sv=1&sig=c2ln' failed", "GET 'https://acct.blob.core.windows.net/squash/idx/current?***' failed")]
    [InlineData("BlobEndpoint=https://acct.blob.core.windows.net/?sv=1&sig=c2ln;QueueEndpoint=x", "BlobEndpoint=https://acct.blob.core.windows.net/?***;QueueEndpoint=x")]
    [InlineData("https://app.azurewebsites.net/api/indexes/x/query?code=ZnVuY3Rpb24ta2V5", "https://app.azurewebsites.net/api/indexes/x/query?***")]
    // A bare SAS token, without its URL.
    [InlineData("token sv=2024-08-04&sp=r&sig=c2lnbmF0dXJl&se=2030", "token sv=2024-08-04&sp=r&sig=***&se=2030")]
    [InlineData("?sv=1&SIG=c2lnbmF0dXJl", "?sv=1&SIG=***")]
    // Other keys that connection strings carry.
    [InlineData("Endpoint=sb://x/;SharedAccessKeyName=root;SharedAccessKey=a2V5", "Endpoint=sb://x/;SharedAccessKeyName=root;SharedAccessKey=***")]
    [InlineData("Server=db;User Id=sa;Password=hunter2;", "Server=db;User Id=sa;Password=***;")]
    public void CredentialsAreRedacted(string text, string expected)
    {
        Assert.Equal(expected, SecretRedaction.Redact(text));
        Assert.Equal(expected, SecretRedaction.Redact(expected)); // redacting twice changes nothing
    }

    [Theory]
    [InlineData("dir:/data/indexes")]
    [InlineData("azure:https://acct.blob.core.windows.net")]
    [InlineData("http://127.0.0.1:7071/api/indexes/x/query")]
    [InlineData("azure:acct/squash")]
    [InlineData("the design=plain signal and a --sig-bits flag")]
    [InlineData("")]
    public void EverythingElseIsLeftAlone(string text) => Assert.Equal(text, SecretRedaction.Redact(text));

    /// <summary>bench's `reproduce:` line: the arguments as given, credentials redacted, quoted for a shell.</summary>
    [Fact]
    public void TheReproduceLineHidesTheConnectionStringsKey()
    {
        string[] args = ["bench", "--store", "azure:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleQ==", "--index", "gen", "--cold", "--cf", "1.3"];
        Assert.Equal("reproduce: squash bench --store 'azure:DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***' --index gen --cold --cf 1.3",
            BenchCommand.ReproduceLine(args));
        string[] sas = ["bench", "--store", "azure:https://acct.blob.core.windows.net?sv=1&sig=c2ln", "--index", "gen", "--cold"];
        Assert.Equal("reproduce: squash bench --store 'azure:https://acct.blob.core.windows.net?***' --index gen --cold", BenchCommand.ReproduceLine(sas));
    }

    /// <summary>The line comes from the command's own arguments (not the process's, which a test runner or a wrapper owns).</summary>
    [Fact]
    public async Task BenchPrintsTheReproduceLineOfItsOwnArguments()
    {
        using var dir = new TempDir();
        var rows = TempDir.Random(200, 4, 5).ToArray();
        var vectors = dir.Fvecs("base.fvecs", rows);
        var queries = dir.Fvecs("q.fvecs", rows.Take(3));
        using (var w = new BinaryWriter(File.Create(dir.File("gt.ivecs"))))
            for (int i = 0; i < 3; i++) { w.Write(1); w.Write(i); }
        var (bexit, _, berr) = await CliRunner.RunAsync("build", "--index", dir.File("idx"), "--vectors", vectors, "--partitions", "2");
        Assert.True(bexit == 0, berr);
        string[] args = ["bench", "--index", dir.File("idx"), "--queries", queries, "--ground-truth", dir.File("gt.ivecs"), "--k", "1",
            "--cf", "2", "--h", "100", "--r", "2", "--runs", "1", "--brute-force-queries", "0", "--out", dir.File("out")];
        var (exit, output, err) = await CliRunner.RunAsync(args);
        Assert.True(exit == 0, err);
        Assert.Contains(BenchCommand.ReproduceLine(args), output.Split('\n').Select(l => l.TrimEnd('\r')));
    }
}
