using Messaging.LocalAws.Sqs;

namespace Messaging.LocalAws.Tests;

public sealed class QueuePolicyEvaluatorTests
{
    private const string Queue = "arn:aws:sqs:us-east-1:000000000000:orders";
    private const string Topic = "arn:aws:sns:us-east-1:000000000000:events";
    private const string Account = "000000000000";

    private static string Statement(string effect, string principal, string action, string resource, string? condition = null) =>
        $$"""{"Effect":"{{effect}}","Principal":{{principal}},"Action":"{{action}}","Resource":"{{resource}}"{{(condition is null ? "" : $",\"Condition\":{condition}")}}}""";

    private static bool Allows(params string[] statements) =>
        QueuePolicyEvaluator.AllowsTopicDelivery($$"""{"Version":"2012-10-17","Statement":[{{string.Join(',', statements)}}]}""", Queue, Topic, Account);

    [Fact]
    public void Service_principal_with_ArnEquals_on_the_topic_allows()
    {
        Assert.True(Allows(Statement("Allow", """{"Service":"sns.amazonaws.com"}""", "sqs:SendMessage", Queue, $$$"""{"ArnEquals":{"aws:SourceArn":"{{{Topic}}}"}}""")));
    }

    [Fact]
    public void Another_topic_in_the_condition_does_not_allow()
    {
        Assert.False(Allows(Statement("Allow", """{"Service":"sns.amazonaws.com"}""", "sqs:SendMessage", Queue, $$$"""{"ArnEquals":{"aws:SourceArn":"{{{Topic}}}-2"}}""")));
    }

    [Fact]
    public void Wildcards_in_action_resource_and_principal_allow()
    {
        Assert.True(Allows(Statement("Allow", "\"*\"", "SQS:*", "arn:aws:sqs:us-east-1:000000000000:*",
            """{"StringEquals":{"aws:SourceAccount":"000000000000"}}""")));
    }

    [Fact]
    public void Deny_overrides_allow()
    {
        Assert.False(Allows(
            Statement("Allow", """{"AWS":"*"}""", "sqs:SendMessage", Queue),
            Statement("Deny", """{"Service":"sns.amazonaws.com"}""", "sqs:*", Queue)));
    }

    [Fact]
    public void Other_actions_unknown_condition_operators_and_missing_policies_do_not_allow()
    {
        Assert.False(Allows(Statement("Allow", """{"Service":"sns.amazonaws.com"}""", "sqs:ReceiveMessage", Queue)));
        Assert.False(Allows(Statement("Allow", """{"Service":"sns.amazonaws.com"}""", "sqs:SendMessage", Queue, """{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}""")));
        Assert.False(QueuePolicyEvaluator.AllowsTopicDelivery(null, Queue, Topic, Account));
        Assert.False(QueuePolicyEvaluator.AllowsTopicDelivery("not json", Queue, Topic, Account));
    }
}
