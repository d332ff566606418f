using Messaging.Aws;

namespace Messaging.ConformanceTests.Aws;

public sealed class SnsSqsOptionsTests
{
    [Fact]
    public void Defaults_are_valid()
    {
        Assert.Empty(SnsSqsOptionsValidator.Problems(new SnsSqsTransportOptions()));
    }

    [Theory]
    [InlineData("ServiceUrl", "localhost:4566")]
    [InlineData("Region", "Europe")]
    [InlineData("AccountId", "12345")]
    [InlineData("WaitTimeSeconds", "21")]
    [InlineData("MaxEventSizeBytes", "300000")]
    [InlineData("SecretAccessKey", "")]
    public void Bad_settings_are_reported_by_their_configuration_name(string setting, string value)
    {
        var options = new SnsSqsTransportOptions();
        switch (setting)
        {
            case "ServiceUrl": options.ServiceUrl = value; break;
            case "Region": options.Region = value; break;
            case "AccountId": options.AccountId = value; break;
            case "WaitTimeSeconds": options.WaitTimeSeconds = int.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
            case "MaxEventSizeBytes": options.MaxEventSizeBytes = int.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
            case "SecretAccessKey": options.AccessKeyId = "AKID"; options.SecretAccessKey = value; break;
        }
        var problem = Assert.Single(SnsSqsOptionsValidator.Problems(options));
        Assert.StartsWith("Messaging:SnsSqs:" + setting, problem, StringComparison.Ordinal);
    }

    [Fact]
    public void Redrive_limit_leaves_room_above_max_attempts()
    {
        Assert.Equal("""{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:q-dead-letter","maxReceiveCount":9}""",
            SnsSqsTransport.RedrivePolicy("arn:aws:sqs:us-east-1:000000000000:q-dead-letter", 9));
    }
}
